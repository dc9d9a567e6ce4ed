"""A real Tryton server for the test session, on the real PostgreSQL.

Activating the invoicing modules on PostgreSQL takes about a minute, so it is done once into a
template database named after a hash of the setup code (and the year: fiscal years are built
around today); every session then copies the template (a second) and serves the copy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from apps.connectors import tryton_server as local_tryton
from apps.connectors.tryton import TrytonConnector, TrytonRPC

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PG_URI = "postgresql://postgres@127.0.0.1:5432/"
PASSWORD = "tryton-test-admin"


def _admin_sql(*statements: str) -> None:
    connection = psycopg2.connect(dbname="postgres", **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def _databases(prefix: str) -> list[str]:
    connection = psycopg2.connect(dbname="postgres", **PG)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"])
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


def _template_name() -> str:
    source = Path(local_tryton.__file__).read_bytes()
    stamp = hashlib.sha256(source + version("trytond").encode() + str(date.today().year).encode())
    return f"hub_tryton_tpl_{stamp.hexdigest()[:12]}"


def _ensure_template(workdir: Path) -> str:
    template = _template_name()
    if template in _databases(template):
        return template
    for stale in _databases("hub_tryton_tpl_"):
        _admin_sql(f'DROP DATABASE IF EXISTS "{stale}"')
    building = template + "_building"
    _admin_sql(f'DROP DATABASE IF EXISTS "{building}"', f"CREATE DATABASE \"{building}\" ENCODING 'UTF8'")
    config = local_tryton.write_config(workdir / "template", postgres_uri=PG_URI)
    local_tryton.bootstrap(config, building, PASSWORD)
    # Renamed only once complete, so an interrupted build is never mistaken for a template.
    _admin_sql(f'ALTER DATABASE "{building}" RENAME TO "{template}"')
    return template


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_tryton.TrytonServer]:
    workdir = tmp_path_factory.mktemp("tryton")
    template = _ensure_template(workdir)
    database = f"hub_tryton_test_{os.getpid()}"
    _admin_sql(f'DROP DATABASE IF EXISTS "{database}"', f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    port = local_tryton.free_port()
    config = local_tryton.write_config(workdir / "server", port=port, postgres_uri=PG_URI)
    server = local_tryton.start_server(config, database, PASSWORD, port, log_path=workdir / "trytond.log")
    yield server
    server.stop()
    _admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def connector_settings(server: local_tryton.TrytonServer, **overrides: Any) -> dict[str, Any]:
    return {
        "url": server.url,
        "database": server.database,
        "username": server.username,
        "password": server.password,
        "timeout": 60,
        **overrides,
    }


@pytest.fixture
def tryton_connector(tryton_server: local_tryton.TrytonServer) -> Iterator[TrytonConnector]:
    connector = TrytonConnector(connector_settings(tryton_server))
    yield connector
    connector.close()


class TrytonInspector:
    """Reads what the ERP holds, the way an accountant would look in Tryton."""

    def __init__(self, server: local_tryton.TrytonServer) -> None:
        self.rpc = TrytonRPC(server.url, server.database, server.username, server.password, 60)

    def _search_read(self, model: str, domain: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        return self.rpc.call(f"model.{model}.search_read", [domain, 0, None, [["id", "ASC"]], fields], writes=False)  # type: ignore[no-any-return]

    def parties(self, code: str) -> list[dict[str, Any]]:
        return self._search_read("party.party", [["code", "=", code]], ["id", "name", "code"])

    def invoices(self, reference: str) -> list[dict[str, Any]]:
        return self._search_read(
            "account.invoice",
            [["reference", "=", reference]],
            [
                "id",
                "state",
                "number",
                "total_amount",
                "tax_amount",
                "amount_to_pay",
                "invoice_date",
                "party",
                "description",
            ],
        )

    def invoice_lines(self, invoice_id: int) -> list[dict[str, Any]]:
        rows = self._search_read(
            "account.invoice.line",
            [["invoice", "=", invoice_id]],
            ["description", "amount", "quantity", "account.code"],
        )
        return [{**row, "account_code": (row.get("account.") or {}).get("code")} for row in rows]

    def payment_lines(self, invoice_id: int) -> list[dict[str, Any]]:
        [invoice] = self.rpc.call("model.account.invoice.read", [[invoice_id], ["payment_lines"]], writes=False)
        if not invoice["payment_lines"]:
            return []
        return self.rpc.call(  # type: ignore[no-any-return]
            "model.account.move.line.read",
            [invoice["payment_lines"], ["id", "credit", "debit", "move.description"]],
            writes=False,
        )

    def receivable(self, party_code: str) -> Decimal:
        """What the customer owes in Tryton: the balance of its receivable lines."""
        [party] = self._search_read("party.party", [["code", "=", party_code]], ["receivable"])
        return Decimal(party["receivable"])

    def account_balance(self, code: str) -> Decimal:
        [account] = self._search_read("account.account", [["code", "=", code]], ["balance"])
        return Decimal(account["balance"])

    def credit_notes(self, party_code: str) -> list[dict[str, Any]]:
        """Posted customer invoices with a negative total (Tryton's credit notes) of the party."""
        return [
            invoice
            for invoice in self._search_read(
                "account.invoice",
                [["party.code", "=", party_code], ["type", "=", "out"], ["state", "in", ["posted", "paid"]]],
                ["id", "number", "total_amount", "state"],
            )
            if Decimal(invoice["total_amount"]) < 0
        ]

    def moves(self, description: str) -> list[dict[str, Any]]:
        """Journal entries carrying ``description`` (the hub's reference), with their lines."""
        moves = self._search_read("account.move", [["description", "=", description]], ["id", "state", "lines"])
        for move in moves:
            move["lines"] = self.rpc.call(
                "model.account.move.line.read", [move["lines"], ["debit", "credit", "account.code"]], writes=False
            )
        return moves

    def count(self, model: str, domain: list[Any]) -> int:
        return int(self.rpc.call(f"model.{model}.search_count", [domain], writes=False))

    def amount(self, value: Any) -> Decimal:
        return Decimal(value)

    # -- what an accountant does at month end --------------------------------------------------

    def _create(self, model: str, values: dict[str, Any]) -> int:
        [record_id] = self.rpc.call(f"model.{model}.create", [[values]], writes=True)
        return int(record_id)

    def ensure_fiscal_year(self, year: int) -> None:
        """A fiscal year of monthly periods with its own move and invoice sequences, as the
        bootstrap makes them (it makes last year, this year and next year)."""
        if self._search_read("account.fiscalyear", [["name", "=", str(year)]], ["id"]):
            return
        company = int(self.rpc.context["company"])
        [moves_type] = self._search_read("ir.sequence.type", [["name", "=", "Account Move"]], ["id"])
        [invoices_type] = self._search_read("ir.sequence.type", [["name", "=", "Invoice"]], ["id"])

        def sequence(name: str, kind: dict[str, Any], prefix: str = "") -> int:
            values = {"name": f"{name} {year}", "sequence_type": kind["id"], "company": company, "prefix": prefix}
            return self._create("ir.sequence.strict", values)

        invoices = sequence("Invoices", invoices_type, f"INV/{year}/")
        credit_notes = sequence("Credit notes", invoices_type, f"CN/{year}/")
        fiscal_year = self._create(
            "account.fiscalyear",
            {
                "name": str(year),
                "start_date": date(year, 1, 1),
                "end_date": date(year, 12, 31),
                "company": company,
                "move_sequence": sequence("Moves", moves_type),
                "invoice_sequences": [
                    [
                        "create",
                        [
                            {
                                "company": company,
                                "out_invoice_sequence": invoices,
                                "out_credit_note_sequence": credit_notes,
                                "in_invoice_sequence": invoices,
                                "in_credit_note_sequence": credit_notes,
                            }
                        ],
                    ]
                ],
            },
        )
        self.rpc.call("model.account.fiscalyear.create_period", [[fiscal_year]], writes=True)

    def period(self, on: date) -> dict[str, Any]:
        [period] = self._search_read(
            "account.period",
            [["type", "=", "standard"], ["start_date", "<=", on], ["end_date", ">=", on]],
            ["id", "name", "state", "start_date", "end_date"],
        )
        return period

    def close_period(self, on: date) -> dict[str, Any]:
        """Close the accounting period of ``on`` (Tryton closes its journal periods with it)."""
        period = self.period(on)
        if period["state"] == "open":
            self.rpc.call("model.account.period.close", [[period["id"]]], writes=True)
        return self.period(on)

    def reopen_period(self, on: date) -> None:
        """Reopen the period of ``on`` and its journal periods, as an accountant undoes a close."""
        period = self.period(on)
        if period["state"] != "open":
            self.rpc.call("model.account.period.reopen", [[period["id"]]], writes=True)
        closed = self._search_read(
            "account.journal.period", [["period", "=", period["id"]], ["state", "=", "closed"]], ["id"]
        )
        if closed:
            self.rpc.call("model.account.journal.period.reopen", [[row["id"] for row in closed]], writes=True)

    def notes(self, model: str, record_id: int) -> list[str]:
        """The notes people read beside a record in Tryton's client."""
        rows = self._search_read("ir.note", [["resource", "=", f"{model},{record_id}"]], ["message"])
        return [str(row["message"]) for row in rows]

    def move_of_line(self, line_id: int) -> dict[str, Any]:
        [line] = self.rpc.call(
            "model.account.move.line.read", [[line_id], ["move", "move.date", "move.description"]], writes=False
        )
        return {"id": int(line["move"]), "date": line["move."]["date"], "description": line["move."]["description"]}


@pytest.fixture(scope="session")
def tryton_inspector(tryton_server: local_tryton.TrytonServer) -> TrytonInspector:
    return TrytonInspector(tryton_server)


@pytest.fixture
def tryton(tryton_inspector: TrytonInspector) -> TrytonInspector:
    return tryton_inspector
