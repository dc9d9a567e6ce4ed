"""Renders bench/BENCHMARKS.md and its PNG plots (bench/results/) from a results file of bench/run.py.

The figures, tables and verdicts come from the results file alone; bench/benchmarks_notes.md (the
findings: what limits the hub and why, written by whoever ran it) is included as it stands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REPORT = ROOT / "bench" / "BENCHMARKS.md"
NOTES = ROOT / "bench" / "benchmarks_notes.md"

TARGET_INGEST = 0.50
TARGET_E2E = 0.40
TARGET_BURST = 1.10
TARGET_MEMORY_MB = 200


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def plot_ingest(ingest: dict[str, Any], path: Path) -> None:
    plt = _plt()
    names = list(ingest["summary"])
    fig, (rates, latency) = plt.subplots(1, 2, figsize=(11, 4))
    medians = [ingest["summary"][n]["rate_median"] for n in names]
    bars = rates.bar(names, medians, color=["#9aa5b1", "#6c8ebf", "#d79b00"])
    for n, name in enumerate(names):
        rates.scatter(
            [n] * len(ingest["summary"][name]["rates"]), ingest["summary"][name]["rates"], color="black", s=10
        )
    rates.bar_label(bars, fmt="%.0f")
    rates.set_ylabel("requests per second (median of rounds; dots: each round)")
    rates.set_title("Ingest: requests/s on the same gunicorn")
    width = 0.38
    xs = range(len(names))
    latency.bar([x - width / 2 for x in xs], [ingest["summary"][n]["p50_ms"] for n in names], width, label="p50")
    latency.bar([x + width / 2 for x in xs], [ingest["summary"][n]["p99_ms"] for n in names], width, label="p99")
    latency.set_xticks(list(xs), names)
    latency.set_ylabel("milliseconds")
    latency.set_title(f"Latency at {ingest['settings']['wrk_connections']} connections (median round)")
    latency.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_e2e(e2e: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (curve, hist) = plt.subplots(1, 2, figsize=(11, 4))
    saturated = e2e["runs"]["saturated"]
    received = saturated["received_times"]
    posted = saturated["posted_times"]
    curve.plot(received, range(1, len(received) + 1), label="webhooks stored")
    curve.plot(posted, range(1, len(posted) + 1), label="invoices POSTED in the ERP")
    curve.set_xlabel("seconds since the first webhook")
    curve.set_ylabel("events")
    curve.set_title(f"End to end, saturated: {saturated['events_per_second']} events/s")
    curve.legend()
    paced = e2e["runs"].get("paced") or saturated
    hist.hist(paced["latency_seconds"], bins=40, color="#6c8ebf")
    hist.axvline(paced["p50_seconds"], color="black", linestyle="--", label=f"p50 {paced['p50_seconds']} s")
    hist.axvline(paced["p99_seconds"], color="red", linestyle="--", label=f"p99 {paced['p99_seconds']} s")
    hist.set_xlabel("event-to-posted seconds")
    hist.set_title(f"Paced at {paced['offered_rate']} events/s")
    hist.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_burst(burst: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (rate, drained) = plt.subplots(1, 2, figsize=(11, 4))
    per_second = burst["requests_per_second"]
    rate.plot(range(len(per_second)), per_second, linewidth=0.6, label="ERP requests in each second")
    limit = burst["settings"]["erp_requests_per_second"]
    rate.axhline(limit, color="red", linestyle="--", label=f"budget {limit}/s")
    rate.set_xlabel("seconds since the burst was sent")
    rate.set_ylabel("requests per second at the ERP")
    rate.set_title(f"Month-end burst: {burst['settings']['invoices']:,} invoices")
    rate.legend(loc="lower center")
    progress = burst["progress"]
    rate_invoices = limit / burst["erp_requests_per_invoice"]
    drained.plot(
        [p["seconds"] for p in progress],
        [p["invoice_postings"].get("posted", 0) for p in progress],
        label="invoices posted",
    )
    ideal = burst["ideal_seconds"]
    drained.plot([0, ideal], [0, burst["settings"]["invoices"]], linestyle="--", label="ideal (budget-bound)")
    drained.set_xlabel("seconds")
    drained.set_ylabel("invoices posted")
    drained.set_title(f"Drain {burst['drain_seconds']} s vs ideal {ideal} s ({rate_invoices:.1f} invoices/s)")
    drained.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(memory: dict[str, Any], path: Path) -> None:
    plt = _plt()
    labels, values = [], []
    for n, mb in enumerate(memory["web_workers_mb"]):
        labels.append(f"gunicorn worker {n + 1}")
        values.append(mb)
    for n, mb in enumerate(memory["celery_main_mb"]):
        labels.append(f"celery main {n + 1}")
        values.append(mb)
    for n, mb in enumerate(memory["celery_pool_mb"]):
        labels.append(f"celery pool {n + 1}")
        values.append(mb)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bars = ax.barh(labels, values, color="#6c8ebf")
    ax.bar_label(bars, fmt="%.0f MB")
    ax.axvline(TARGET_MEMORY_MB, color="red", linestyle="--", label=f"{TARGET_MEMORY_MB} MB")
    ax.set_xlabel("resident set size (MiB) after the burst")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _noop_words(noop: dict[str, Any]) -> str:
    if "before" not in noop:  # results of a harness that measured it once
        return f"**{noop['tasks_per_second']} tasks/s** ({noop['seconds']} s; load {noop['load_average'][0]})."
    before, after = noop["before"], noop["after"]
    return (
        f"Measured before the hub's runs ({before['tasks_per_second']} tasks/s, load {before['load_average'][0]}) "
        f"and after them ({after['tasks_per_second']} tasks/s, load {after['load_average'][0]}): "
        f"**{noop['tasks_per_second']} tasks/s** on average."
    )


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        "## Machine",
        "",
        f"- {m['cores']} × {m['cpu']}, {m['memory_gib']} GiB memory, Linux {m['kernel']}.",
        f"- Python {m['python']}, Django {m['django']}, Celery {m['celery']}, gunicorn {m['gunicorn']}, "
        f"PostgreSQL {m['postgresql']} (stock settings), {m['redis']}, {m['wrk']}.",
        f"- Load average (1, 5, 15 min) at the start: {m['load_average_at_start']}; at the end: "
        f"{m.get('load_average_at_end', '?')} (each part gives its own). The harness's own processes load "
        "the machine; anything else running moves the absolute figures: every ceiling is measured in the "
        "same run, on the same processes and settings, so the ratios hold better than the rates.",
        f"- Code: commit {m.get('commit', '?')}, with {m.get('uncommitted_files', '?')} tracked files changed in the "
        "working tree by sessions working at the same time.",
        "- Everything runs on this one machine: PostgreSQL, Redis, the web and worker processes, the ERP "
        "(simulator or Tryton) and the load generators.",
        "",
    ]


def render(results: dict[str, Any], source: Path) -> Path:
    stamp = results["stamp"]
    lines = [
        "# Benchmarks",
        "",
        "The hub held against this machine's own ceilings, measured in the same run "
        "(`bench/run.py`; issue 7). This file is written by the harness from "
        f"`bench/results/{source.name}` (raw figures); the findings at the end are "
        "`bench/benchmarks_notes.md`.",
        "",
        *(
            [f"Command: `{results['command']}`"]
            if "combined_from" not in results
            else [
                "Parts from two runs of the same session (each part measures its ceilings in its own run):",
                "",
                *(
                    f"- {', '.join(parts)}: `bench/results/{name}` (`{command}`)"
                    for name, parts, command in results["combined_from"]
                ),
            ]
        ),
        "",
    ]
    verdict = ["## Verdict", "", "| acceptance line | target | measured | |", "| --- | ---: | ---: | --- |"]
    body: list[str] = []
    ingest, e2e, tryton, burst = (results.get(k) for k in ("ingest", "e2e", "tryton", "burst"))

    if ingest:
        plot_ingest(ingest, RESULTS / f"ingest-{stamp}.png")
        ratio = ingest["ratio_to_insert"]
        verdict.append(
            f"| ingest ≥ 50% of the insert-only view | ≥ {TARGET_INGEST:.2f} | {ratio:.2f} | "
            f"{_yes(ratio >= TARGET_INGEST)} |"
        )
        s = ingest["summary"]
        body += [
            "## Ingest: signed Stripe webhooks per second",
            "",
            f"gunicorn {ingest['settings']['gunicorn']}, the bench settings (production settings plus two "
            "ceiling views). wrk (a process of its own) holds "
            f"{ingest['settings']['wrk_connections']} connections open with {ingest['settings']['wrk_threads']} "
            f"threads for {ingest['settings']['seconds_per_run']} s per run; every request is a different "
            "`invoice.finalized` event (about 1.9 kB, two lines), signed beforehand. The three targets run in turn, "
            f"{ingest['settings']['rounds']} rounds, the inbox table emptied and Redis flushed before each run; "
            "the figure is the median round. No Celery worker runs: the normalize messages wait in Redis.",
            "",
            "- **bare 200 view**: `HttpResponse(status=200)` behind the same middleware.",
            "- **insert-only view**: parses the body and inserts the same `InboxEvent` row in one statement.",
            "- **hub webhook**: `/webhooks/stripe-us/`: signature check, source lookup, the inbox insert, "
            "the Celery message to normalize it, a log line and the metrics.",
            "",
            "| target | requests/s (median) | each round | p50 ms | p99 ms | non-2xx |",
            "| --- | ---: | --- | ---: | ---: | ---: |",
        ]
        for name, row in s.items():
            body.append(
                f"| {name} | {row['rate_median']:.0f} | {', '.join(f'{r:.0f}' for r in row['rates'])} | "
                f"{row['p50_ms']} | {row['p99_ms']} | {row['non_2xx']} |"
            )
        loads = [r["load_average"][0] for runs in ingest["runs"].values() for r in runs]
        body += [
            "",
            f"The hub serves **{ingest['ratio_to_insert']:.0%} of the insert-only view's rate** and "
            f"{ingest['ratio_to_bare']:.0%} of the bare view's. Every answered webhook was a stored row "
            f"(checked per run: {', '.join(str(c['answered']) + '=' + str(c['rows']) for c in ingest['row_checks'])}). "
            f"1-minute load average during the runs: {min(loads):.1f}–{max(loads):.1f}.",
            "",
            f"![ingest](results/ingest-{stamp}.png)",
            "",
        ]

    if e2e:
        plot_e2e(e2e, RESULTS / f"e2e-{stamp}.png")
        saturated = e2e["runs"]["saturated"]
        ratio = e2e["ratio_to_noop_per_event"]
        verdict.append(
            f"| end to end ≥ 40% of the Celery no-op ceiling (same messages per event) | ≥ {TARGET_E2E:.2f} | "
            f"{ratio:.2f} | {_yes(ratio >= TARGET_E2E)} |"
        )
        verdict.append(
            f"| *the same, against the raw no-op task rate* | *≥ {TARGET_E2E:.2f}* | "
            f"*{e2e['ratio_to_noop_tasks']:.2f}* | "
            f"*{'met' if e2e['ratio_to_noop_tasks'] >= TARGET_E2E else 'missed'}* |"
        )
        noop = e2e["noop"]
        st = e2e["settings"]
        body += [
            "## End to end: webhook to POSTED against a zero-latency ERP",
            "",
            f"The ERP is `tests/erp_simulator.py` (an in-memory Tryton speaking JSON-RPC, no added latency) "
            f"in a process of its own. The hub runs as deployed: gunicorn as above, {st['worker_processes']} "
            f"Celery worker command(s) with a prefork pool of {st['concurrency']}, beat, multi-process "
            f"metrics. Events are `invoice.finalized`, {st['invoices_per_customer']} invoices per customer "
            f"(so a customer posting precedes every tenth invoice), sent by `bench/send_events.py` (a process "
            f"of its own, {st['sender_threads']} threads, kept-alive connections). A warm-up of 100 events "
            "comes first. An event counts when its invoice is POSTED; event-to-posted is the inbox row's "
            "arrival to the posting's `posted_at`.",
            "",
            "| run | events | events/s | p50 s | p99 s | tasks per event | CPU ms per event (web + workers) "
            "| load before → after |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for label, run in e2e["runs"].items():
            offered = "as fast as answered" if label == "saturated" else f"paced at {run['offered_rate']}/s"
            body.append(
                f"| {label} ({offered}) | {run['events']} | {run['events_per_second']} | {run['p50_seconds']} | "
                f"{run['p99_seconds']} | {run['tasks_per_event']} | {run['cpu_ms_per_event']} | "
                f"{run['load_average_before'][0]} → {run['load_average_after'][0]} |"
            )
        body += [
            "",
            f"**Celery no-op ceiling**: {noop['tasks']:,} no-op tasks queued first, then the same worker "
            f"command line (same settings: JSON, `acks_late`, prefetch 1, reject on worker lost, task events "
            f"on) on that queue, timed from the first message taken to the last acknowledged. " + _noop_words(noop),
            "",
            f"An event is {saturated['tasks_per_event']} tasks here (one normalization, one invoice posting, "
            "a customer posting for every tenth invoice, and the runs that find a child not yet due), so "
            f"the ceiling for events is {noop['tasks_per_second']} ÷ {saturated['tasks_per_event']} = "
            f"**{e2e['noop_ceiling_events_per_second']} events/s**. The hub's saturated rate is "
            f"**{e2e['ratio_to_noop_per_event']:.0%}** of that ({e2e['ratio_to_noop_tasks']:.0%} of the raw "
            "task rate).",
            "",
            f"The ERP received {e2e['erp']['requests']:,} requests, {e2e['erp']['duplicate_invoices']} duplicate "
            "invoices.",
            "",
            f"![end to end](results/e2e-{stamp}.png)",
            "",
        ]

    if tryton:
        hub_rate = tryton["through_hub"]["events_per_second"]
        direct = tryton["direct"]
        body += [
            "## End to end against the real Tryton",
            "",
            f"The same stream, {tryton['settings']['events']} events, into a real Tryton 8.2 (trytond on "
            f"PostgreSQL, this machine), the connection's concurrency cap {tryton['settings']['concurrency']}. "
            f"Then Tryton's own rate for the same calls made directly: the connector's `ensure_customer` "
            f"and `post_invoice` with the documents the hub built, into a fresh copy of the same Tryton "
            f"database, from {direct['threads']} threads, a call Tryton answers busy (503: two posts contend "
            "for the invoice sequence) tried again at once.",
            "",
            "| | invoices | seconds | invoices/s | p50 s | p99 s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            f"| through the hub (webhook to POSTED) | {tryton['through_hub']['events']} | "
            f"{tryton['through_hub']['span_seconds']} | {hub_rate} | {tryton['through_hub']['p50_seconds']} | "
            f"{tryton['through_hub']['p99_seconds']} |",
            f"| direct connector calls | {direct['invoices']} (+{direct['customers']} customers) | "
            f"{direct['seconds']} | {direct['invoices_per_second']} | | |",
            "",
            f"Through the hub: **{tryton['ratio_to_direct']:.0%} of Tryton's own rate** "
            f"(direct calls retried after busy: {direct['retries_after_busy'] or 'none'}).",
            "",
        ]

    if burst:
        plot_burst(burst, RESULTS / f"burst-{stamp}.png")
        plot_memory(burst["memory_after"], RESULTS / f"memory-{stamp}.png")
        ratio = burst["ratio_to_ideal"]
        limit = burst["settings"]["erp_requests_per_second"]
        peak = burst["peak_requests_in_any_1s_window"]
        verdict.append(
            f"| burst drain ≤ 1.10 × ideal ({burst['settings']['invoices']:,} invoices) | ≤ {TARGET_BURST:.2f} | "
            f"{ratio:.4f} | {_yes(ratio <= TARGET_BURST)} |"
        )
        verdict.append(
            f"| ERP limit never exceeded (most requests in any 1 s window) | ≤ {limit} | {peak} | "
            f"{_yes(peak <= limit)} |"
        )
        memory = burst["memory_after"]
        web = max(memory["web_workers_mb"])
        worker = max(memory["celery_main_mb"] + memory["celery_pool_mb"])
        verdict.append(
            f"| web worker resident after the burst | < {TARGET_MEMORY_MB} MB | {web:.0f} MB | "
            f"{_yes(web < TARGET_MEMORY_MB)} |"
        )
        verdict.append(
            f"| Celery worker resident after the burst (largest process) | < {TARGET_MEMORY_MB} MB | {worker:.0f} MB | "
            f"{_yes(worker < TARGET_MEMORY_MB)} |"
        )
        st = burst["settings"]
        body += [
            "## Month-end burst to a rate-limited ERP",
            "",
            f"{st['invoices']:,} invoices of {st['customers']:,} customers the ERP already holds (their first "
            "invoices went through the webhook and were posted first), normalized and planned: their rows are "
            "copies of those first invoices, made by SQL (one statement per table, the real idempotency key "
            "formula), and every invoice posting's message is sent at once, as the planner does on commit. "
            f"The ERP connection's request budget (`ConnectionFlow.max_requests`, apps/flow) is **{limit} "
            f"requests per second** (spread evenly by the limiter, apps/flow/limiter.py), its concurrency cap "
            f"{st['max_concurrency']}; {st['worker_processes']} "
            f"worker command(s) with a pool of {st['concurrency']}, beat. The ERP is the simulator, which "
            "records the arrival of every request.",
            "",
            "| | |",
            "| --- | ---: |",
            f"| invoices posted | {burst['postings']:,} (attempts {burst['attempts']:,}; duplicates in the ERP: "
            f"{burst['duplicate_invoices_in_erp']}) |",
            f"| ERP requests the burst needed | {burst['erp_requests']:,} "
            f"({burst['erp_requests_per_invoice']} per invoice) |",
            f"| ideal drain = requests ÷ budget | {burst['ideal_seconds']:,} s |",
            f"| measured drain (first message sent → last POSTED) | {burst['drain_seconds']:,} s |",
            f"| **drain ÷ ideal** | **{ratio:.4f}** |",
            f"| most requests the ERP saw in any 1 s window (sliding) | {peak} (budget {limit}) |",
            f"| most in one calendar second | {burst['peak_requests_in_a_calendar_second']} |",
            f"| worker CPU seconds during the drain | {burst['cpu_seconds']['workers']} |",
            f"| load average before | {burst['load_average_before']} |",
            "",
            f"![burst](results/burst-{stamp}.png)",
            "",
            "## Memory after the burst",
            "",
            "Resident set size (VmRSS) of every gunicorn worker and every Celery process (the main process "
            "and its pool children) a few seconds after the burst drained:",
            "",
            f"- web workers: {', '.join(f'{v:.0f} MB' for v in memory['web_workers_mb'])}",
            f"- Celery main: {', '.join(f'{v:.0f} MB' for v in memory['celery_main_mb'])}; pool: "
            f"{', '.join(f'{v:.0f} MB' for v in memory['celery_pool_mb'])}",
            "",
            f"![memory](results/memory-{stamp}.png)",
            "",
        ]

    lines += [*verdict, "", *_machine(results), *body]
    if NOTES.exists():
        lines += [NOTES.read_text().rstrip(), ""]
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "bin/bench --quick      # every part small: a few minutes, to check the harness",
        "bin/bench              # full sizes (see --help for every size and setting)",
        "bin/bench --burst-invoices 100000 --erp-rate 300 --ingest-max-rate 8000   # the committed run",
        "bin/bench --report bench/results/bench-<stamp>.json   # only render this file again",
        "```",
        "",
    ]
    REPORT.write_text("\n".join(lines))
    print(f"report: {REPORT}")
    return REPORT
