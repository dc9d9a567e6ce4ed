"""The moving parts of a chaos run, all real processes: a Redis of its own (so it can be restarted
without disturbing anything else), the web process, Celery workers (one is SIGKILLed and
replaced), beat, and a thread pool that delivers signed webhooks as Stripe would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from apps.connectors.tryton_server import free_port
from apps.sources import stripe_samples as se
from tests.chaos.generator import NORMAL, STALE, TAMPERED, Delivery, tampered_body
from tests.conftest import ROOT, wait_for


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.workdir / f"redis-{self.restarts}.log").open("w")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, timeout=20, what="the chaos Redis")

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def restart(self) -> None:
        """Kill it (everything in it is lost: queued tasks, budgets) and start it again."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class DeliveryLog:
    statuses: Counter[int] = field(default_factory=Counter)
    accepted_event_ids: set[str] = field(default_factory=set)
    refused_wrongly: list[str] = field(default_factory=list)  # a genuine event not answered 2xx
    accepted_wrongly: list[str] = field(default_factory=list)  # a stale or tampered one answered 2xx
    sender_retries: int = 0  # deliveries the sender had to repeat after a 5xx or no answer
    lock: threading.Lock = field(default_factory=threading.Lock)


_sessions = threading.local()


def _session() -> requests.Session:
    """One HTTP session per sender thread: connections are kept alive, as Stripe's senders do."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
    return session


def send(url: str, delivery: Delivery, secret: str, log: DeliveryLog) -> None:
    event = delivery.event
    body = json.dumps(event).encode()
    timestamp = None
    if delivery.mode == STALE:
        timestamp = int(time.time()) - 3600
    signature = se.sign(body, secret, timestamp)
    if delivery.mode == TAMPERED:
        body = tampered_body(event)
    barrier = threading.Barrier(delivery.concurrent) if delivery.concurrent > 1 else None

    def post() -> int:
        if barrier is not None:
            barrier.wait()
        status = 0
        for attempt in range(6):  # Stripe retries what was not answered 2xx or 4xx
            try:
                status = (
                    _session()
                    .post(
                        url,
                        data=body,
                        timeout=30,
                        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                    )
                    .status_code
                )
            except requests.ConnectionError:
                status = 0
            if 200 <= status < 500:
                return status
            with log.lock:
                log.sender_retries += 1
            time.sleep(0.5 * (attempt + 1))
        return status

    if delivery.concurrent > 1:
        with ThreadPoolExecutor(max_workers=delivery.concurrent) as pool:
            statuses = list(pool.map(lambda _: post(), range(delivery.concurrent)))
    else:
        statuses = [post()]
    with log.lock:
        for status in statuses:
            log.statuses[status] += 1
            if delivery.mode == NORMAL:
                if status == 200:
                    log.accepted_event_ids.add(event["id"])
                else:
                    log.refused_wrongly.append(f"{event['id']}: {status}")
            elif status == 200:
                log.accepted_wrongly.append(f"{delivery.mode} {event['id']}")


def deliver_all(
    url: str,
    deliveries: list[Delivery],
    secret: str,
    *,
    threads: int = 8,
    at_fraction: dict[float, Any] | None = None,
) -> DeliveryLog:
    """Deliver in plan order from a pool of threads; call each ``at_fraction`` hook once that share
    of the deliveries has been handed out (to kill a worker or restart Redis mid-run)."""
    log = DeliveryLog()
    hooks = sorted((at_fraction or {}).items())
    in_flight = threading.BoundedSemaphore(threads)  # hand out only as fast as they are sent

    def run(delivery: Delivery) -> None:
        try:
            send(url, delivery, secret, log)
        finally:
            in_flight.release()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = []
        for index, delivery in enumerate(deliveries):
            while hooks and index >= hooks[0][0] * len(deliveries):
                hooks.pop(0)[1]()
            in_flight.acquire()
            futures.append(pool.submit(run, delivery))
        for future in futures:
            future.result()
    return log
