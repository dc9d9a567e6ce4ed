"""Gauges read from the database when Prometheus scrapes, so every process (and every gunicorn
worker) reports the same truth and nothing is kept in memory that could drift from the rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps.flow.models import CircuitState
from apps.observability import services
from apps.observability.models import SyntheticResult

log = logging.getLogger(__name__)


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("hub_metrics_database_up", "1 when the database gauges below could be read.")
        try:
            families = list(self._families())
        except DatabaseError:
            log.exception("could not read the database gauges for /metrics")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        cases = GaugeMetricFamily(
            "hub_open_cases",
            "Open exception cases by category and how long they have been open.",
            labels=["category", "age"],
        )
        for category, buckets in services.open_cases_by_age(now).items():
            for age, count in buckets.items():
                cases.add_metric([category, age], count)
        yield cases

        waiting = services.backlog(now)
        backlog = GaugeMetricFamily(
            "hub_posting_backlog",
            "Postings the hub still has to send, per ERP connection and state.",
            labels=["connection", "state"],
        )
        oldest = GaugeMetricFamily(
            "hub_posting_backlog_oldest_seconds",
            "Age of the oldest posting still in the backlog, per ERP connection.",
            labels=["connection"],
        )
        for name, entry in waiting.items():
            for state in services.BACKLOG_STATES:
                backlog.add_metric([name, state], entry[state])
            oldest.add_metric([name], entry["oldest_seconds"])
        yield backlog
        yield oldest

        circuit = GaugeMetricFamily(
            "hub_circuit_state",
            "1 for the state each ERP connection's circuit breaker is in (closed, open, half_open).",
            labels=["connection", "state"],
        )
        paused = GaugeMetricFamily(
            "hub_connection_paused", "1 when a person paused the ERP connection.", labels=["connection"]
        )
        for name, entry in services.circuit_states().items():
            for state in CircuitState.values:
                circuit.add_metric([name, state], 1 if entry["state"] == state else 0)
            paused.add_metric([name], 1 if entry["paused"] else 0)
        yield circuit
        yield paused

        differences = GaugeMetricFamily(
            "hub_reconciliation_differences",
            "Differences billing, the ledger and the ERP disagree on, left open by the latest reconciliation runs.",
            labels=["connection"],
        )
        for name, count in services.reconciliation_differences().items():
            differences.add_metric([name], count)
        yield differences

        latency = GaugeMetricFamily(
            "hub_synthetic_last_latency_seconds",
            "Latency of the last synthetic transaction, per sandbox connection (absent when it did not post).",
            labels=["connection"],
        )
        success = GaugeMetricFamily(
            "hub_synthetic_last_success_timestamp_seconds",
            "When the last synthetic transaction reached the sandbox ERP (Unix time).",
            labels=["connection"],
        )
        result = GaugeMetricFamily(
            "hub_synthetic_last_result",
            "1 for the result of the last finished synthetic transaction.",
            labels=["connection", "result"],
        )
        for name, entry in services.synthetic_status().items():
            if entry["result"] == SyntheticResult.POSTED and entry["latency_seconds"] is not None:
                latency.add_metric([name], entry["latency_seconds"])
            if entry["last_success_at"] is not None:
                success.add_metric([name], entry["last_success_at"].timestamp())
            for value in (SyntheticResult.POSTED, SyntheticResult.FAILED, SyntheticResult.TIMED_OUT):
                result.add_metric([name, value], 1 if entry["result"] == value else 0)
        yield latency
        yield success
        yield result
