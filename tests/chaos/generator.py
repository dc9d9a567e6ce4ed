"""A seeded stream of Stripe events as a month-end burst delivers them: duplicated, concurrent,
out of order, some with stale or tampered signatures. The plan also keeps the truth (what billing
holds) so the invariants can be checked against the ERP's own records."""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from typing import Any

from apps.sources import stripe_samples as se

NORMAL, STALE, TAMPERED = "normal", "stale", "tampered"
PRICES = (
    (4900, "Pro plan (monthly)", "prod_pro", "price_pro_monthly"),
    (1250, "API calls", "prod_usage_api_calls", "price_api"),
    (19900, "Enterprise seat", "prod_ent", "price_ent"),
)


@dataclass
class Delivery:
    event: dict[str, Any]
    mode: str = NORMAL
    concurrent: int = 1  # sent this many times at the same instant


@dataclass
class InvoiceTruth:
    customer: str
    currency: str
    total: int
    paid: bool


@dataclass
class Plan:
    seed: int
    deliveries: list[Delivery] = field(default_factory=list)
    customers: dict[str, str] = field(default_factory=dict)  # id -> final name
    invoices: dict[str, InvoiceTruth] = field(default_factory=dict)
    unique_events: int = 0

    @property
    def duplicate_deliveries(self) -> int:
        accepted = sum(d.concurrent for d in self.deliveries if d.mode == NORMAL)
        return accepted - self.unique_events


def build(seed: int, *, customers: int = 200, invoices: int = 920, base_time: int) -> Plan:
    rng = random.Random(seed)
    plan = Plan(seed)
    streams: list[list[dict[str, Any]]] = []  # each entity's events in true order
    clock = base_time - 10_000

    def tick() -> int:
        nonlocal clock
        clock += 1
        return clock

    customer_ids = []
    for n in range(customers):
        cus_id = f"cus_chaos{seed}_{n:04d}"
        name = f"Customer {n:04d} Ltd"
        cus = se.customer(cus_id, name=name, email=f"ap{n}@chaos.example")
        events = [se.event("customer.created", cus, created=tick(), event_id=f"evt_c{seed}_{n}_created")]
        if rng.random() < 0.3:
            renamed = copy.deepcopy(cus)
            renamed["name"] = name = f"Customer {n:04d} Holdings"
            events.append(se.event("customer.updated", renamed, created=tick(), event_id=f"evt_c{seed}_{n}_updated"))
        plan.customers[cus_id] = name
        customer_ids.append(cus_id)
        streams.append(events)

    for n in range(invoices):
        cus_id = rng.choice(customer_ids)
        lines = []
        for k in range(rng.randint(1, 3)):
            amount, description, product, price = rng.choice(PRICES)
            quantity = rng.randint(1, 4)
            line = se.line(amount * quantity, quantity=quantity, description=description, product=product, price=price)
            line["id"] = f"il_chaos{seed}_{n}_{k}"
            lines.append(line)
        inv = se.invoice(
            cus_id,
            lines,
            invoice_id=f"in_chaos{seed}_{n:04d}",
            number=f"CH{seed}-{n:05d}",
            customer_name=plan.customers[cus_id],
            payment_intent=f"pi_chaos{seed}_{n:04d}",
        )
        paid = rng.random() < 0.9
        events = [se.event("invoice.finalized", inv, created=tick(), event_id=f"evt_i{seed}_{n}_finalized")]
        if paid:
            paid_obj = se.paid(inv, payment_intent=f"pi_chaos{seed}_{n:04d}")
            events.append(se.event("invoice.paid", paid_obj, created=tick(), event_id=f"evt_i{seed}_{n}_paid"))
        plan.invoices[inv["id"]] = InvoiceTruth(cus_id, inv["currency"].upper(), inv["total"], paid)
        streams.append(events)

    # 15% of entities deliver their events out of order (payments before invoices, updates before
    # creates); the streams are then interleaved at random.
    for events in streams:
        if len(events) > 1 and rng.random() < 0.15 / 0.55:  # about half the streams have two events
            events.reverse()
    order: list[dict[str, Any]] = []
    cursors = [list(events) for events in streams]
    while cursors:
        index = rng.randrange(len(cursors))
        order.append(cursors[index].pop(0))
        if not cursors[index]:
            cursors.pop(index)
    plan.unique_events = len(order)

    deliveries = [Delivery(event) for event in order]
    extra: list[tuple[int, Delivery]] = []
    for position, delivery in enumerate(list(deliveries)):
        roll = rng.random()
        copies = 0
        if roll < 0.20:
            copies = 1
        elif roll < 0.23:
            copies = rng.randint(2, 4)
        for _ in range(copies):
            extra.append((rng.randint(position + 1, len(deliveries) + 10), Delivery(delivery.event)))
        if rng.random() < 0.05:
            delivery.concurrent = 2
        if rng.random() < 0.01:
            extra.append((rng.randint(0, len(deliveries)), Delivery(delivery.event, STALE)))
        if rng.random() < 0.01:
            extra.append((rng.randint(0, len(deliveries)), Delivery(delivery.event, TAMPERED)))
    for position, delivery in sorted(extra, key=lambda item: item[0], reverse=True):
        deliveries.insert(min(position, len(deliveries)), delivery)
    plan.deliveries = deliveries
    return plan


def tampered_body(event: dict[str, Any]) -> bytes:
    """The same event with an amount changed after signing: what an attacker would send."""
    forged = copy.deepcopy(event)
    obj = forged["data"]["object"]
    for key in ("total", "amount_paid", "balance"):
        if key in obj:
            obj[key] = int(obj[key] or 0) + 100_000
    return json.dumps(forged).encode()
