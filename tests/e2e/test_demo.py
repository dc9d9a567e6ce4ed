"""The README's first command, `bin/demo --check`, on a fresh clone of the repository: embedded
defaults only (SQLite, kombu's filesystem broker, a local Tryton on SQLite), the sample invoices
posted in Tryton, Flower seeing the worker's events, and nothing left running afterwards."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from apps.connectors.tryton_server import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

# What the pytest process carries for the test settings (PostgreSQL, Redis, the test Tryton, the
# test webhook secret) must not reach the demo, which has to run on its embedded defaults.
INHERITED = {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "STRIPE_WEBHOOK_SECRET", "SECRET_KEY", "DEBUG"}
INHERITED_PREFIXES = ("HUB_", "CELERY_", "TRYTON_")


def demo_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in INHERITED and not name.startswith(INHERITED_PREFIXES)
    }
    env.update(
        HUB_PORT=str(free_port()),
        TRYTON_PORT=str(free_port()),
        FLOWER_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    return env


def session_members(session_id: int) -> list[str]:
    """Command lines of the processes still in the demo's session (it started them all)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(f"{stat.parent.name}: {cmdline}")
    return members


def stop_session(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the demo's process group (its cleanup trap stops the rest), SIGKILL after 60 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 60
    while session_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_bin_demo_check_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "hub"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    # The clone gets the project's installed environment instead of a second pip install; the
    # demo's requirements are a subset of it, so bin/demo's install step finds them satisfied.
    (clone / ".venv").symlink_to(ROOT / ".venv")

    process = subprocess.Popen(
        ["bash", "bin/demo", "--check"],
        cwd=clone,
        env=demo_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        stop_session(process)
        output, _ = process.communicate()
        pytest.fail(f"bin/demo --check did not finish in 900 s:\n{output[-6000:]}")
    try:
        left = session_members(process.pid)
    finally:
        stop_session(process)

    assert process.returncode == 0, f"bin/demo --check exited {process.returncode}:\n{output[-6000:]}"
    assert "demo check passed" in output, output[-6000:]
    # posting_status: every posting settled as posted, and the three sample invoices found in Tryton.
    states = dict(re.findall(r"^(\w+)\s+(\d+)$", output, re.MULTILINE))
    assert set(states) == {"posted"} and int(states["posted"]) >= 3, states
    assert "needs action" not in output
    in_tryton = re.findall(r"^in tryton-local: stripe-us:in_\w+ → invoice (\S+) \(\d+\)$", output, re.MULTILINE)
    assert len(in_tryton) == 3, output[-6000:]
    assert re.search(r"^Flower: celery@\S+ online, \d+ task\(s\) succeeded$", output, re.MULTILINE), output[-6000:]
    assert left == [], f"bin/demo left processes running: {left}"
