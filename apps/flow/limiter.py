"""Request budgets shared by every worker process on every host, kept in Redis.

``WindowLimiter``: at most N requests in any window of P seconds (a sliding log in a sorted set,
timed by the Redis server's clock so hosts with skewed clocks agree). ``ConcurrencyLimiter``: at
most C calls in flight at once (leases in a sorted set that expire, so a killed worker's slot comes
back by itself). Both are single Lua scripts: check and take happen atomically.

Without Redis (the demo runs on a filesystem broker) the same classes work in one process.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

_WINDOW = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local member = ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil(period / 1000) + 1000)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + period - now}
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
    windows: dict[str, deque[float]] = {}
    slots: dict[str, dict[str, float]] = {}


class WindowLimiter:
    def __init__(self, name: str, limit: int, period_seconds: float) -> None:
        self.key = f"{_namespace()}:flow:window:{name}"
        self.limit = max(1, int(limit))
        # A small margin so requests that leave at the window's edge do not arrive inside it.
        self.period_us = int(period_seconds * 1_000_000) + 20_000
        self._redis = redis_client()
        self._script = self._redis.register_script(_WINDOW) if self._redis is not None else None

    def try_acquire(self) -> float:
        """0 when a request may go now, else the seconds to wait before the next try."""
        if self._script is not None:
            allowed, wait_us = self._script(keys=[self.key], args=[self.limit, self.period_us, uuid.uuid4().hex])
            return 0.0 if int(allowed) else max(int(wait_us), 1000) / 1_000_000
        now = time.monotonic() * 1_000_000
        with _LocalState.lock:
            log = _LocalState.windows.setdefault(self.key, deque())
            while log and log[0] <= now - self.period_us:
                log.popleft()
            if len(log) < self.limit:
                log.append(now)
                return 0.0
            return (log[0] + self.period_us - now) / 1_000_000

    def acquire(self, *, max_wait: float) -> float:
        """Wait for a request slot for up to ``max_wait`` seconds; return 0 when granted, or the
        seconds still to wait when it was not (the caller reschedules instead of blocking)."""
        deadline = time.monotonic() + max_wait
        while True:
            wait = self.try_acquire()
            if wait == 0:
                return 0.0
            if time.monotonic() + wait > deadline:
                return wait
            time.sleep(wait)


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
