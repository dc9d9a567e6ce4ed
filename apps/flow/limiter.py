"""Request budgets shared by every worker process on every host, kept in Redis.

``WindowLimiter``: at most N requests in any window of P seconds, spread evenly: each request gets
the next free send time, about P/N after the one before, with a small burst allowed after a pause
(the generic cell rate algorithm, its "theoretical arrival time" kept in Redis and timed by the
Redis server's clock so hosts with skewed clocks agree). The caller sleeps until its time, then
sends. Letting a whole window's budget go at once would queue it at the ERP, and the requests at
the back of that queue would arrive within one window of the next window's first ones: the ERP
would count more than N. ``ConcurrencyLimiter``: at
most C calls in flight at once (leases in a sorted set that expire, so a killed worker's slot comes
back by itself). Both are single Lua scripts: check and take happen atomically.

Without Redis (the demo runs on a filesystem broker) the same classes work in one process.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

# GCRA with reservations: the next send time (µs) is max(now, TAT − tolerance), refused when more
# than ARGV[3] µs away; TAT (the theoretical arrival time) then moves one interval on from
# max(TAT, the send time). Returns {granted, wait}.
_PACE = """
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', key) or '0')
local slot = math.max(now, tat - tolerance)
local wait = slot - now
if wait > max_wait then
  return {0, string.format('%d', wait)}
end
local new_tat = math.max(tat, slot) + interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', key, string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, string.format('%d', wait)}
"""

_ACQUIRE_SLOT = """
local key = KEYS[1]
local cap = tonumber(ARGV[1])
local lease = ARGV[2]
local ttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) < cap then
  redis.call('ZADD', key, now + ttl, lease)
  redis.call('PEXPIRE', key, ttl + 1000)
  return 1
end
return 0
"""

_redis_client: Any = None
_redis_lock = threading.Lock()


def _namespace() -> str:
    """Keeps two hubs (or two test runs) sharing one Redis from sharing budgets."""
    return str(getattr(settings, "HUB_FLOW_NAMESPACE", "hub"))


def redis_url() -> str:
    return str(getattr(settings, "HUB_FLOW_REDIS_URL", "") or "")


def redis_client() -> Any:
    global _redis_client
    url = redis_url()
    if not url:
        return None
    with _redis_lock:
        if _redis_client is None or getattr(_redis_client, "_hub_url", "") != url:
            import redis

            _redis_client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            _redis_client._hub_url = url
        return _redis_client


class _LocalState:
    lock = threading.Lock()
    next_free: dict[str, int] = {}
    slots: dict[str, dict[str, float]] = {}


class WindowLimiter:
    """At most ``limit`` requests in any ``period_seconds`` at the ERP.

    Requests are spread one interval apart; after a pause, a few may go at once (the burst) so
    that send times nobody was ready for are not all lost. Any JITTER + period at the sender then
    holds at most ``limit`` requests, so two requests a period apart here still arrive a period
    apart at the ERP when one of them takes up to JITTER longer to get there (a sender descheduled
    between its send time and the socket write, or the ERP's own accept queue)."""

    JITTER_SECONDS = 0.02
    BURST_SECONDS = 0.02  # of the period given up so that a burst fits: limit × 20 ms / period requests

    def __init__(self, name: str, limit: int, period_seconds: float) -> None:
        self.key = f"{_namespace()}:flow:pace:{name}"
        self.limit = max(1, int(limit))
        spread = period_seconds + self.JITTER_SECONDS
        interval = (spread + self.BURST_SECONDS) / self.limit
        burst = 1 + int(self.BURST_SECONDS / interval)
        if burst == 1:
            interval = spread / self.limit  # too few requests per period for a burst: no margin for one
        self.burst = burst
        self.interval_us = int(interval * 1_000_000) + 1
        self.tolerance_us = (burst - 1) * self.interval_us
        self._redis = redis_client()
        self._script = self._redis.register_script(_PACE) if self._redis is not None else None

    def _reserve(self, max_wait: float) -> tuple[bool, float]:
        """Take the next send time if it is at most ``max_wait`` seconds away: (taken, seconds to it)."""
        max_wait_us = int(max_wait * 1_000_000)
        if self._script is not None:
            granted, wait_us = self._script(keys=[self.key], args=[self.interval_us, self.tolerance_us, max_wait_us])
            return bool(int(granted)), int(wait_us) / 1_000_000
        now = int(time.monotonic() * 1_000_000)
        with _LocalState.lock:
            tat = _LocalState.next_free.get(self.key, 0)
            slot = max(now, tat - self.tolerance_us)
            if slot - now > max_wait_us:
                return False, (slot - now) / 1_000_000
            _LocalState.next_free[self.key] = max(tat, slot) + self.interval_us
            return True, (slot - now) / 1_000_000

    def try_acquire(self) -> float:
        """0 when a request may go now (its send time is taken), else the seconds until the next free one."""
        granted, wait = self._reserve(0.0)
        return 0.0 if granted else max(wait, 0.001)

    def acquire(self, *, max_wait: float) -> float:
        """Take the next send time if it is at most ``max_wait`` seconds away and sleep until it;
        return 0 then. Otherwise take nothing and return the seconds to the next free time (the
        caller reschedules instead of blocking)."""
        granted, wait = self._reserve(max_wait)
        if not granted:
            return max(wait, 0.001)
        if wait > 0:
            time.sleep(wait)
        return 0.0


class ConcurrencyLimiter:
    def __init__(self, name: str, capacity: int, lease_seconds: float) -> None:
        self.key = f"{_namespace()}:flow:slots:{name}"
        self.capacity = max(1, int(capacity))
        self.lease_ms = int(lease_seconds * 1000)
        self._redis = redis_client()
        self._script = self._redis.register_script(_ACQUIRE_SLOT) if self._redis is not None else None

    def try_acquire(self) -> str | None:
        lease = uuid.uuid4().hex
        if self._script is not None:
            return lease if int(self._script(keys=[self.key], args=[self.capacity, lease, self.lease_ms])) else None
        now = time.monotonic()
        with _LocalState.lock:
            leases = _LocalState.slots.setdefault(self.key, {})
            for held, expires in list(leases.items()):
                if expires <= now:
                    del leases[held]
            if len(leases) < self.capacity:
                leases[lease] = now + self.lease_ms / 1000
                return lease
        return None

    def release(self, lease: str) -> None:
        if self._redis is not None:
            try:
                self._redis.zrem(self.key, lease)
            except Exception:  # noqa: BLE001 - Redis away: the lease expires by itself
                log.warning("could not release a concurrency slot; it expires on its own", extra={"key": self.key})
            return
        with _LocalState.lock:
            _LocalState.slots.get(self.key, {}).pop(lease, None)

    def in_use(self) -> int:
        if self._redis is not None:
            now_ms = int(time.time() * 1000)
            self._redis.zremrangebyscore(self.key, "-inf", now_ms)
            return int(self._redis.zcard(self.key))
        with _LocalState.lock:
            return len(_LocalState.slots.get(self.key, {}))
