"""The processes of a benchmark run, each its own OS process as deployed: a Redis of the run's own,
gunicorn with the bench settings, Celery workers and beat, the ERP simulator, and the load
generators. Nothing here imports Django: the harness sets it up after Redis is known."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SECRET = "whsec_bench_secret"
QUEUE = "bench"
NOOP_QUEUE = "bench.noop"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A child in its own process group, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_mb(pid: int) -> float:
    """Resident set size in MiB (VmRSS: anonymous, file-backed and shared pages the process maps)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    mem_kb = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]

    def version(args: list[str]) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    import celery
    import django
    import gunicorn

    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": celery.__version__,
        "gunicorn": gunicorn.__version__,
        "postgresql": version(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"]),
        "redis": version(["redis-server", "--version"]),
        "wrk": version(["wrk", "--version"]) if shutil.which("wrk") else "not installed",
        "commit": version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "uncommitted_files": len(
            subprocess.run(
                ["git", "-C", str(ROOT), "status", "--short", "--untracked-files=no"], capture_output=True, text=True
            ).stdout.splitlines()
        ),
        "load_average_at_start": load_average(),
    }


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = Proc(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            dict(os.environ),
            workdir / "redis.log",
        )
        wait_for(lambda: listening(self.port), timeout=20, what="Redis")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop()


class ErpSim:
    """tests/erp_simulator.py in its own process (bench/erp_sim_server.py)."""

    def __init__(self, workdir: Path, name: str = "erp-sim") -> None:
        ready = workdir / f"{name}.json"
        ready.unlink(missing_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = Proc([PY, str(ROOT / "bench" / "erp_sim_server.py"), str(ready)], env, workdir / f"{name}.log")
        wait_for(lambda: ready.exists() and ready.read_text(), timeout=30, what="the ERP simulator")
        info = json.loads(ready.read_text())
        self.url, self.control = info["url"], info["control"]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.control}/stats", timeout=60) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]

    def arrivals(self) -> list[float]:
        with urllib.request.urlopen(f"{self.control}/arrivals", timeout=120) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.stop()


class Hub:
    """gunicorn, Celery workers and beat of one run, all on the bench settings."""

    def __init__(self, workdir: Path, env: dict[str, str], *, web_workers: int, web_threads: int) -> None:
        self.workdir = workdir
        self.env = env
        self.port = free_port()
        self.web = Proc(
            [
                PY,
                "-m",
                "gunicorn",
                "-c",
                "python:apps.observability.gunicorn_conf",
                "integration_hub.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(web_workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(web_threads),
                "--backlog",
                "2048",
            ],
            env,
            workdir / "gunicorn.log",
        )
        self.workers: list[Proc] = []
        self.started_workers = 0
        self.beat: Proc | None = None
        wait_for(lambda: listening(self.port), timeout=60, what="gunicorn")
        wait_for(lambda: len(children(self.web.pid)) >= web_workers, timeout=60, what="the gunicorn workers")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start_workers(self, processes: int, concurrency: int, queues: str = "") -> list[Proc]:
        started = []
        for _ in range(processes):
            self.started_workers += 1
            log = self.workdir / f"worker-{self.started_workers}.log"
            proc = Proc(
                [
                    PY,
                    "-m",
                    "celery",
                    "-A",
                    "integration_hub",
                    "worker",
                    "-l",
                    "info",
                    "-c",
                    str(concurrency),
                    "-Q",
                    queues or f"{QUEUE},{QUEUE}.posting",
                    "-n",
                    f"bench-{self.started_workers}-{os.getpid()}@%h",
                    "--without-gossip",
                    "--without-mingle",
                ],
                self.env,
                log,
            )
            self.workers.append(proc)
            started.append(proc)
        for proc in started:
            wait_for(
                lambda p=proc: "ready." in p.log_path.read_text() or not p.alive(),
                timeout=90,
                what="a Celery worker to start",
            )
            if not proc.alive():
                raise RuntimeError(f"Celery worker exited:\n{proc.log_path.read_text()[-3000:]}")
        return started

    def stop_workers(self, procs: list[Proc] | None = None) -> None:
        for proc in procs if procs is not None else list(self.workers):
            proc.stop()
            self.workers.remove(proc)

    def start_beat(self) -> None:
        self.beat = Proc(
            [PY, "-m", "celery", "-A", "integration_hub", "beat", "-l", "info", "-s", str(self.workdir / "beat")],
            self.env,
            self.workdir / "beat.log",
        )

    def memory(self) -> dict[str, Any]:
        """Resident size of every gunicorn worker and every Celery process (main and pool children)."""
        web = [round(rss_mb(pid), 1) for pid in children(self.web.pid)]
        celery_main, pool = [], []
        for proc in self.workers:
            if proc.alive():
                celery_main.append(round(rss_mb(proc.pid), 1))
                pool.extend(round(rss_mb(pid), 1) for pid in children(proc.pid))
        return {"web_workers_mb": web, "celery_main_mb": celery_main, "celery_pool_mb": pool}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the web workers and by the Celery processes."""
        web = sum(cpu_seconds(pid) for pid in children(self.web.pid))
        workers = 0.0
        for proc in self.workers:
            if proc.alive():
                workers += cpu_seconds(proc.pid) + sum(cpu_seconds(pid) for pid in children(proc.pid))
        return {"web": round(web, 2), "workers": round(workers, 2)}

    def stop(self) -> None:
        self.stop_workers()
        if self.beat is not None:
            self.beat.stop()
        self.web.stop()


def wrk(
    url: str, events_file: Path, *, seconds: float, threads: int, connections: int, cycle: bool = False
) -> dict[str, Any]:
    """Run wrk (a process of its own) with bench/webhooks.lua; its JSON summary."""
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(ROOT / "bench" / "webhooks.lua"),
            url,
            "--",
            str(events_file),
            str(threads),
            *(["cycle"] if cycle else []),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    return json.loads(line)  # type: ignore[no-any-return]


def send_events(
    url: str, events_file: Path, *, threads: int, rate: float = 0.0, env: dict[str, str]
) -> subprocess.Popen:
    """Start bench/send_events.py (a process of its own); read its JSON line from stdout when done."""
    return subprocess.Popen(
        [
            PY,
            str(ROOT / "bench" / "send_events.py"),
            url,
            str(events_file),
            "--threads",
            str(threads),
            "--rate",
            str(rate),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
