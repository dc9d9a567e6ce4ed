"""Soak mode of the chaos suite (outside CI): a long seeded burst at a fixed event rate, an ERP
outage in the middle, a worker SIGKILLed every N seconds while events flow; then the time to
drain once the faults stop, and the counts that matter: duplicate executions (allowed: the price
of at-least-once) and duplicate effects in the ERP (must be 0).

    .venv/bin/python bench/chaos_soak.py --events 100000 --rate 500 --outage 300 --kill-every 30

Uses its own PostgreSQL database (default hub_soak, recreated), its own Redis, the same processes
and ERP simulator as tests/chaos, and writes bench/out/soak-<seed>-<events>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500.0, help="events per second offered")
    parser.add_argument("--outage", type=float, default=300.0, help="seconds the ERP is down, mid-burst")
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (each -c 2 prefork unless --pool)")
    parser.add_argument("--pool", default="", help="Celery pool for the workers, e.g. solo (one task per process)")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--database", default="hub_soak")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings_test")
    os.environ["CELERY_BROKER_URL"] = "memory://"  # this process only reads; the hub's processes get their own
    import psycopg2

    admin = psycopg2.connect(dbname="postgres", host="127.0.0.1", user="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{args.database}"')
    admin.close()

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.console import hub_config

    os.environ.update(TRYTON_URL="http://127.0.0.1:9", TRYTON_DATABASE="sim", TRYTON_PASSWORD="sim-admin")
    hub_config.apply(hub_config.load(ROOT / "config" / "hub.example.yaml"))

    import tempfile

    from apps.console.models import CaseStatus, ExceptionCase
    from apps.posting.models import Posting, PostingAttempt
    from tests.chaos import generator
    from tests.chaos.harness import deliver_all
    from tests.chaos.test_chaos import Run, configure, drained
    from tests.conftest import SECRET, wait_for
    from tests.erp_simulator import ErpSimulator, FaultRates
    from tests.fault_proxy import FaultProxy

    faults = FaultRates(
        server_error=0.05, throttle=0.02, timeout_after_commit=0.03, timeout_before_commit=0.01, validation_error=0.01
    )
    sim = ErpSimulator(seed=args.seed, faults=faults, hang_seconds=2.5)
    proxy = FaultProxy(sim.url)
    configure(
        proxy.url,
        password=sim.password,
        timeout=1.0,
        database="sim",
        max_requests=5000,
        period_seconds=1,
        max_concurrency=8,
        failure_threshold=30,
        probe_after_seconds=5,
    )
    invoices = max(10, int(args.events / 2.1))
    plan = generator.build(args.seed, customers=max(20, invoices // 5), invoices=invoices, base_time=int(time.time()))
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    fake_erp = SimpleNamespace(url=proxy.url, database="sim", password=sim.password)
    run = Run(fake_erp, workdir, workers=args.workers, worker_args=["--pool", args.pool] if args.pool else [])
    stop_killing = threading.Event()

    def killer() -> None:
        while not stop_killing.wait(args.kill_every):
            run.kill_a_worker()

    pace = 1.0 / args.rate
    outage_at = len(plan.deliveries) // 3
    outage_started = [0.0]

    def outage_on() -> None:
        proxy.down = True
        outage_started[0] = time.monotonic()
        threading.Timer(args.outage, lambda: setattr(proxy, "down", False)).start()

    from tests.chaos import harness

    original_send = harness.send

    def paced_send(*a: object, **k: object) -> None:
        time.sleep(pace * 32)  # 32 sender threads: about ``rate`` events per second in all
        original_send(*a, **k)  # type: ignore[arg-type]

    harness.send = paced_send  # type: ignore[assignment]
    threading.Thread(target=killer, daemon=True).start()
    started = time.monotonic()
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    progress_path = out / f"soak-progress-{args.seed}-{args.events}.jsonl"
    progress_path.write_text("")
    stop_progress = threading.Event()

    def progress() -> None:
        """One line a minute: how far ingest and posting are, for the drain curve in the report."""
        from django.db import connection
        from django.db.models import Count

        while not stop_progress.wait(60):
            states = dict(Posting.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))
            inbox = dict(InboxEvent.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
            line = {
                "seconds": round(time.monotonic() - started, 1),
                "erp_down": proxy.down,
                "workers_killed": run.killed,
                "inbox": inbox,
                "postings": states,
                "erp_invoices": len(sim.invoices),
            }
            with progress_path.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
        connection.close()

    from apps.ingest.models import InboxEvent

    progress_thread = threading.Thread(target=progress, daemon=True)
    progress_thread.start()
    try:
        log = deliver_all(
            run.webhook_url,
            plan.deliveries,
            SECRET,
            threads=32,
            at_fraction={outage_at / len(plan.deliveries): outage_on},
        )
        delivered = time.monotonic()
        while proxy.down:
            time.sleep(1)
        stop_killing.set()
        faults_stopped = time.monotonic()
        sim.faults = FaultRates()
        wait_for(drained, timeout=6 * 3600, interval=5, what="the hub to drain")
        drained_at = time.monotonic()
    finally:
        stop_killing.set()
        stop_progress.set()
        progress_thread.join(timeout=120)
        run.stop()
    postings = Posting.objects.count()
    executions = PostingAttempt.objects.count()
    result = {
        "seed": args.seed,
        "events": plan.unique_events,
        "deliveries": sum(d.concurrent for d in plan.deliveries),
        "duplicate deliveries": plan.duplicate_deliveries,
        "offered rate (events/s)": args.rate,
        "achieved delivery rate (deliveries/s)": round(sum(log.statuses.values()) / (delivered - started), 1),
        "answers": dict(log.statuses),
        "genuine deliveries not answered 2xx": len(log.refused_wrongly),
        "forged or stale accepted": len(log.accepted_wrongly),
        "outage seconds": args.outage,
        "workers killed": run.killed,
        "postings": postings,
        "executions": executions,
        "duplicate executions": max(executions - postings, 0),
        "duplicate effects (invoices)": len(sim.duplicate_invoices()),
        "duplicate effects (payments)": len(sim.duplicate_payments()),
        "ERP invoices": len(sim.invoices),
        "open cases": ExceptionCase.objects.filter(status=CaseStatus.OPEN).count(),
        "permanent failures in the ERP": len(sim.permanently_failed_references()),
        "delivery seconds": round(delivered - started, 1),
        "drain seconds after faults stopped": round(drained_at - faults_stopped, 1),
        "total seconds": round(drained_at - started, 1),
    }
    path = out / f"soak-{args.seed}-{plan.unique_events}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {path}; process logs in {workdir}")
    sim.stop()
    proxy.stop()


if __name__ == "__main__":
    main()
