"""A local Tryton ERP for the demo and the tests: create a database with the invoicing modules,
do the one-time accountant setup the hub's example configuration expects, and serve it.

Not used in production, where the hub talks to a Tryton someone else runs. The setup mirrors
what an accountant does once: a company (Hub Demo Company, USD), a chart of accounts, revenue
accounts 4000 (subscriptions) and 4100 (usage), a 20 % tax named VAT20, fiscal years with
invoice sequences around today, and two payment methods, Card and Bank.

    python -m apps.connectors.tryton_server bootstrap --sqlite-dir DIR --database NAME --password PW
    python -m apps.connectors.tryton_server serve --sqlite-dir DIR --database NAME --password PW --port P
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import requests

COMPANY_NAME = "Hub Demo Company"
COMPANY_CURRENCY = "USD"
CURRENCIES = {
    "USD": ("U.S. Dollar", "$", 2),
    "EUR": ("Euro", "€", 2),
    "GBP": ("Pound Sterling", "£", 2),
    "JPY": ("Yen", "¥", 0),
}
REVENUE_ACCOUNTS = {"4000": "Subscription revenue", "4100": "Usage revenue"}
CLEARING_ACCOUNTS = {"1150": "Card processor clearing", "1160": "Bank receipts clearing"}
PAYMENT_METHODS = {"Card": "1150", "Bank": "1160"}
BAD_DEBT_ACCOUNT = ("6800", "Bad debts")
DISPUTED_FUNDS_ACCOUNT = ("1190", "Disputed payments")  # chargebacks in progress
DISPUTE_LOSS_ACCOUNT = ("6810", "Dispute losses")
WRITE_OFF_METHODS = {"Bad debt": "6800"}  # name -> the expense account it writes off to
TAXES = {"VAT20": Decimal("0.20")}
MODULES = "account_invoice"
BIN = Path(sys.executable).parent


def write_config(directory: Path, *, port: int = 8000, sqlite_dir: Path | None = None, postgres_uri: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if sqlite_dir is not None:
        sqlite_dir.mkdir(parents=True, exist_ok=True)
        database = f"uri = sqlite://\npath = {sqlite_dir}\n"
    else:
        database = f"uri = {postgres_uri}\n"
    path = directory / "trytond.conf"
    path.write_text(
        "[database]\n"
        f"{database}"
        "[web]\n"
        f"listen = 127.0.0.1:{port}\n"
        "[session]\n"
        # A sane limit on failed logins per address; a hub misconfiguration shows as 429s.
        "max_attempt = 20\n"
    )
    return path


def _admin_env(password: str, directory: Path) -> dict[str, str]:
    passfile = directory / "admin-password"
    passfile.write_text(password + "\n")
    return {**os.environ, "TRYTONPASSFILE": str(passfile)}


def create_database(config: Path, database: str, password: str, *, sqlite_dir: Path | None = None) -> None:
    """Create the database and activate the invoicing modules (30 s on SQLite, 70 s on PostgreSQL)."""
    if sqlite_dir is not None:
        (sqlite_dir / f"{database}.sqlite").touch()
    done = subprocess.run(
        [
            str(BIN / "trytond-admin"),
            "-c",
            str(config),
            "-d",
            database,
            "--email",
            "admin@example.com",
            "-u",
            MODULES,
            "--activate-dependencies",
        ],
        env=_admin_env(password, config.parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"trytond-admin failed ({done.returncode}):\n{done.stdout[-4000:]}")


def setup_accounting(config: Path, database: str, *, years: tuple[int, ...] = ()) -> None:
    """The accountant's one-time setup, through proteus talking to the database directly."""
    from proteus import Model, Wizard
    from proteus import config as proteus_config

    cfg = proteus_config.set_trytond(database, config_file=str(config))
    User = Model.get("res.user")
    Currency = Model.get("currency.currency")
    Party = Model.get("party.party")
    Account = Model.get("account.account")
    AccountTemplate = Model.get("account.account.template")
    ModelData = Model.get("ir.model.data")

    currencies = {}
    for code, (name, symbol, digits) in CURRENCIES.items():
        found = Currency.find([("code", "=", code)])
        currency = found[0] if found else Currency(name=name, code=code, symbol=symbol)
        currency.digits = digits
        currency.rounding = Decimal(1).scaleb(-digits)
        currency.save()
        currencies[code] = currency

    company_wizard = Wizard("company.company.config")
    company_wizard.execute("company")
    company = company_wizard.form
    company.party = Party(name=COMPANY_NAME)
    company.party.save()
    company.currency = currencies[COMPANY_CURRENCY]
    company_wizard.execute("add")
    cfg._context = User.get_preferences(True, {})
    company = Model.get("company.company").find()[0]

    chart = Wizard("account.create_chart")
    chart.execute("account")
    chart.form.account_template = AccountTemplate(ModelData.get_id("account.account_template_root_en", cfg.context))
    chart.form.company = company
    chart.execute("create_account")

    def first(domain: list[tuple[str, str, object]]) -> object:
        found = Account.find([("company", "=", company.id), ("closed", "!=", True), *domain], limit=1)
        return found[0]

    receivable = first([("type.receivable", "=", True)])
    payable = first([("type.payable", "=", True)])
    revenue = first([("type.revenue", "=", True)])
    cash = first([("code", "=", "1.1.1")])
    chart.form.account_receivable = receivable
    chart.form.account_payable = payable
    if hasattr(chart.form, "category_account_revenue"):
        chart.form.category_account_revenue = revenue
        chart.form.category_account_expense = first([("type.expense", "=", True)])
    chart.execute("create_properties")

    for code, name in REVENUE_ACCOUNTS.items():
        Account(name=name, code=code, type=revenue.type, parent=revenue.parent, company=company).save()
    clearing = {}
    for code, name in CLEARING_ACCOUNTS.items():
        account = Account(name=name, code=code, type=cash.type, parent=cash.parent, company=company)
        account.save()
        clearing[code] = account

    code, name = DISPUTED_FUNDS_ACCOUNT
    Account(name=name, code=code, type=cash.type, parent=cash.parent, company=company).save()

    tax_account = first([("code", "=", "6.3.6")])
    Tax = Model.get("account.tax")
    for name, rate in TAXES.items():
        Tax(
            name=name,
            description=f"{name} ({rate * 100:.0f}%)",
            type="percentage",
            rate=rate,
            invoice_account=tax_account,
            credit_note_account=tax_account,
        ).save()

    Journal = Model.get("account.journal")
    [cash_journal] = Journal.find([("type", "=", "cash")], limit=1)
    Method = Model.get("account.invoice.payment.method")
    for name, account_code in PAYMENT_METHODS.items():
        Method(
            name=name,
            journal=cash_journal,
            credit_account=clearing[account_code],
            debit_account=clearing[account_code],
        ).save()

    expense = first([("type.expense", "=", True)])
    code, name = BAD_DEBT_ACCOUNT
    bad_debts = Account(name=name, code=code, type=expense.type, parent=expense.parent, company=company)
    bad_debts.save()
    code, name = DISPUTE_LOSS_ACCOUNT
    Account(name=name, code=code, type=expense.type, parent=expense.parent, company=company).save()
    [write_off_journal] = Journal.find([("type", "=", "write-off")], limit=1)
    WriteOff = Model.get("account.move.reconcile.write_off")
    for method_name in WRITE_OFF_METHODS:
        WriteOff(name=method_name, journal=write_off_journal, credit_account=bad_debts, debit_account=bad_debts).save()

    today = datetime.date.today()
    for year in years or (today.year - 1, today.year, today.year + 1):
        _create_fiscal_year(Model, company, year)


def _create_fiscal_year(Model: object, company: object, year: int) -> None:
    FiscalYear = Model.get("account.fiscalyear")  # type: ignore[attr-defined]
    Sequence = Model.get("ir.sequence.strict")  # type: ignore[attr-defined]
    SequenceType = Model.get("ir.sequence.type")  # type: ignore[attr-defined]
    [move_type] = SequenceType.find([("name", "=", "Account Move")], limit=1)
    [invoice_type] = SequenceType.find([("name", "=", "Invoice")], limit=1)
    fiscal_year = FiscalYear(
        name=str(year),
        start_date=datetime.date(year, 1, 1),
        end_date=datetime.date(year, 12, 31),
        company=company,
    )
    fiscal_year.move_sequence = Sequence(name=f"Moves {year}", sequence_type=move_type, company=company)
    fiscal_year.move_sequence.save()
    invoices = Sequence(name=f"Invoices {year}", prefix=f"INV/{year}/", sequence_type=invoice_type, company=company)
    invoices.save()
    credit_notes = Sequence(
        name=f"Credit notes {year}", prefix=f"CN/{year}/", sequence_type=invoice_type, company=company
    )
    credit_notes.save()
    [sequences] = fiscal_year.invoice_sequences
    sequences.out_invoice_sequence = invoices
    sequences.out_credit_note_sequence = credit_notes
    sequences.in_invoice_sequence = invoices
    sequences.in_credit_note_sequence = credit_notes
    fiscal_year.save()
    FiscalYear.click([fiscal_year], "create_period")


def bootstrap(config: Path, database: str, password: str, *, sqlite_dir: Path | None = None) -> None:
    create_database(config, database, password, sqlite_dir=sqlite_dir)
    # proteus keeps trytond's pool in this process; a child keeps the caller clean.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "apps.connectors.tryton_server",
            "_setup",
            "--config",
            str(config),
            "--database",
            database,
        ],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )


@dataclass
class TrytonServer:
    url: str
    database: str
    password: str
    process: subprocess.Popen[bytes]
    log_path: Path
    username: str = "admin"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/{self.database}/rpc/"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(config: Path, database: str, password: str, port: int, *, log_path: Path) -> TrytonServer:
    """Start trytond for one database and wait until it answers JSON-RPC."""
    log = log_path.open("ab")
    process = subprocess.Popen(
        [str(BIN / "trytond"), "-c", str(config), "-d", database],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = TrytonServer(f"http://127.0.0.1:{port}", database, password, process, log_path)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"trytond exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            # Any answer from the database's endpoint (even 401 before login) means it serves.
            response = requests.post(
                server.rpc_url, json={"id": 0, "method": "common.server.version", "params": []}, timeout=2
            )
            if response.status_code in (200, 401):
                return server
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"trytond did not answer on port {port}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["bootstrap", "serve", "_setup"])
    parser.add_argument("--sqlite-dir", type=Path)
    parser.add_argument("--postgres-uri", default="")
    parser.add_argument("--database", required=True)
    parser.add_argument("--password", default="admin")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)

    if args.command == "_setup":
        setup_accounting(args.config, args.database)
        return
    sqlite_dir = args.sqlite_dir.resolve() if args.sqlite_dir else None
    if sqlite_dir is None and not args.postgres_uri:
        parser.error("give --sqlite-dir or --postgres-uri")
    workdir = (sqlite_dir or Path(tempfile.mkdtemp(prefix="tryton-"))) / "etc"
    config = write_config(workdir, port=args.port, sqlite_dir=sqlite_dir, postgres_uri=args.postgres_uri)
    if args.command == "bootstrap":
        bootstrap(config, args.database, args.password, sqlite_dir=sqlite_dir)
        print(f"Tryton database {args.database} is ready")
        return
    server = start_server(config, args.database, args.password, args.port, log_path=workdir / "trytond.log")
    print(f"Tryton serving {args.database} at {server.url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
