"""Books to reconcile: a Stripe account of its own (a legal entity and a billing source read back
through the Stripe contract simulator), the ledger normalized from its signed webhooks, and the
real Tryton the postings go to. Each test gets a fresh source name, so what earlier tests left in
the session's Tryton never belongs to its runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.console import hub_config
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.ledger.models import LegalEntity
from apps.posting import executor
from apps.posting.models import Posting, PostingState
from apps.reconciliation import services
from apps.reconciliation.models import ReconciliationRun, Trigger
from apps.routing.models import ERPConnection, RoutingRule
from apps.sources import stripe_samples as se
from apps.sources.models import BillingSource
from tests.conftest import EXAMPLE_CONFIG, deliver
from tests.erp_simulator import ErpSimulator
from tests.stripe_simulator import StripeSimulator
from tests.tryton_plugin import TrytonInspector


@pytest.fixture
def tryton_hub(db: None, tryton_env: Any) -> Any:
    """The example configuration against the session's real Tryton, in a rolled-back transaction."""
    hub_config.apply(hub_config.load(EXAMPLE_CONFIG))
    return tryton_env


@pytest.fixture
def stripe_api() -> Iterator[StripeSimulator]:
    simulator = StripeSimulator()
    yield simulator
    simulator.stop()


@dataclass
class Books:
    client: Client
    source: BillingSource
    legal_entity: LegalEntity
    connection: ERPConnection
    stripe: StripeSimulator | None = None
    tryton: TrytonInspector | None = None
    simulator: ErpSimulator | None = None

    @property
    def name(self) -> str:
        return self.source.name

    def ref(self, source_id: str) -> str:
        return f"{self.name}:{source_id}"

    def bill(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Billing holds the document as it is now (Stripe's API answers with it)."""
        if self.stripe is None:
            return obj
        if obj["object"] == "invoice":
            self.stripe.add_invoice(obj)
        else:
            self.stripe.add_credit_note(obj)
        return obj

    def webhook(self, event_type: str, obj: dict[str, Any]) -> None:
        """Billing tells the hub: a signed webhook, stored and normalized."""
        event = se.event(event_type, obj)
        response = deliver(self.client, event, source=self.name)
        assert response.status_code == 200, response.content
        assert normalize_event(InboxEvent.objects.get(source=self.name, event_id=event["id"]).pk) == "processed"

    def drain(self) -> int:
        """Run every posting the hub has queued for this source, as a worker would, until none is left."""
        done = 0
        for _ in range(200):
            queued = list(
                Posting.objects.filter(source=self.name, state=PostingState.QUEUED)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if not queued:
                return done
            for posting_id in queued:
                executor.execute_posting(posting_id)
                done += 1
        raise AssertionError("postings kept coming")

    def run(self, *, heal: bool = True, start: date | None = None, end: date | None = None) -> ReconciliationRun:
        period_start, period_end = services.month_of(date.today())
        run = services.request_run(
            connection=self.connection,
            legal_entity=self.legal_entity,
            currency="USD",
            period_start=start or period_start,
            period_end=end or period_end,
            trigger=Trigger.COMMAND,
            actor="test",
            heal=heal,
        )
        return services.execute_run(run.pk)


@pytest.fixture
def books(client: Client, tryton_hub: Any, stripe_api: StripeSimulator, tryton: TrytonInspector) -> Books:
    code = f"R{uuid.uuid4().hex[:6].upper()}"
    entity = LegalEntity.objects.create(code=code, name=f"Reconciled {code}", country="US", base_currency="USD")
    source = BillingSource.objects.create(
        name=f"stripe-{code.lower()}",
        kind=BillingSource.KIND_STRIPE,
        legal_entity=entity,
        webhook_secrets=["env:STRIPE_WEBHOOK_SECRET"],
        api_settings={"api_key": "env:STRIPE_API_KEY", "base_url": stripe_api.url},
    )
    connection = ERPConnection.objects.get(name="tryton-local")
    RoutingRule.objects.create(name=f"{code} to Tryton", priority=1, legal_entity=entity, connection=connection)
    return Books(client, source, entity, connection, stripe_api, tryton)


@pytest.fixture
def erp_sim(configured: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[ErpSimulator]:
    """The example configuration's Tryton connection pointed at the Tryton contract simulator."""
    with ErpSimulator() as simulator:
        monkeypatch.setenv("TRYTON_URL", simulator.url)
        monkeypatch.setenv("TRYTON_DATABASE", simulator.database)
        monkeypatch.setenv("TRYTON_PASSWORD", simulator.password)
        yield simulator


@pytest.fixture
def sim_books(client: Client, erp_sim: ErpSimulator) -> Books:
    """The example's Stripe account (no API settings: the ledger stands for billing) posting to the
    Tryton simulator."""
    source = BillingSource.objects.get(name="stripe-us")
    connection = ERPConnection.objects.get(name="tryton-local")
    return Books(client, source, source.legal_entity, connection, simulator=erp_sim)


def invoice(amount: int, **kwargs: Any) -> dict[str, Any]:
    return se.invoice(se.uid("cus"), [se.line(amount, description="Pro plan (monthly)")], **kwargs)


def copy(obj: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(obj))


class TrytonDesk:
    """What an accountant does by hand in Tryton, through the same JSON-RPC its client uses."""

    def __init__(self, inspector: TrytonInspector) -> None:
        self.rpc = inspector.rpc
        self.inspector = inspector

    def call(self, method: str, *params: Any) -> Any:
        return self.rpc.call(method, list(params), writes=True)

    def duplicate(self, invoice_id: int, reference: str) -> int:
        """Enter the invoice a second time under the same reference, and post it."""
        [copied] = self.call(
            "model.account.invoice.copy", [invoice_id], {"reference": reference, "invoice_date": date.today()}
        )
        self.call("model.account.invoice.post", [copied])
        return int(copied)

    def unreconcile(self, invoice_id: int) -> None:
        """Undo the reconciliation of the invoice with its payment (the unreconcile-lines wizard)."""
        [row] = self.call("model.account.invoice.read", [invoice_id], ["lines_to_pay", "payment_lines"])
        lines = [*row["lines_to_pay"], *row["payment_lines"]]
        name = "wizard.account.move.unreconcile_lines"
        session, _, _ = self.rpc.call(f"{name}.create", [], writes=False)
        context = {**self.rpc.context, "active_model": "account.move.line", "active_id": lines[0], "active_ids": lines}
        try:
            self.rpc.call(f"{name}.execute", [session, {}, "unreconcile", context], writes=True, with_context=False)
        finally:
            self.rpc.call(f"{name}.delete", [session], writes=False)

    def credit_with_refund(self, invoice_id: int) -> None:
        """Cancel a posted invoice the way Tryton allows: credit it with refund (the credit wizard)."""
        name = "wizard.account.invoice.credit"
        session, _, _ = self.rpc.call(f"{name}.create", [], writes=False)
        context = {**self.rpc.context, "active_model": "account.invoice", "active_id": invoice_id}
        context["active_ids"] = [invoice_id]
        try:
            shown = self.rpc.call(f"{name}.execute", [session, {}, "start", context], writes=False, with_context=False)
            defaults = {k: v for k, v in (shown["view"].get("defaults") or {}).items() if "." not in k}
            start = {**defaults, "with_refund": True, "invoice_date": date.today()}
            params = [session, {"start": start}, "credit", context]
            self.rpc.call(f"{name}.execute", params, writes=True, with_context=False)
        finally:
            self.rpc.call(f"{name}.delete", [session], writes=False)

    def ensure_rates(self, rates: dict[str, Decimal]) -> None:
        """Exchange rates from the start of the year, where Tryton has none yet."""
        for code, rate in rates.items():
            query = [[["code", "=", code]], 0, 1, None, ["id", "rates"]]
            [currency] = self.rpc.call("model.currency.currency.search_read", query, writes=False)
            if not currency["rates"]:
                self.call(
                    "model.currency.currency.rate.create",
                    [{"currency": currency["id"], "date": date(date.today().year, 1, 1), "rate": rate}],
                )


@pytest.fixture
def desk(tryton: TrytonInspector) -> TrytonDesk:
    return TrytonDesk(tryton)
