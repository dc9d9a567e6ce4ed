"""Configuration every posting reads (mappings, routing rules, maintenance windows), kept per
process and never served stale.

A posting used to read its connection's mappings with one query per mapped field (seven for an
invoice) and the routing rules, their version and the maintenance windows on every run, though
they change a few times a month. Each process now keeps what it read, filed under a *generation*:
a counter in Redis that every save, delete or queryset update of such a row increments, once at
once (so the writer's own transaction reads its change) and once after its commit (so a process
that read the old row in between drops it). A lookup reads the counter (one Redis round trip,
a tenth of a query) and drops the process's copies when it moved. A mapping saved in the admin is
therefore seen by the very next posting in every worker: the missing-mapping repost depends on it.

Without Redis (the demo's filesystem broker) nothing is cached: every lookup reads the database.
Rows changed by raw SQL are not seen until another change moves the counter; nothing in the hub
writes these tables that way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection as db_connection
from django.db import models, transaction

log = logging.getLogger(__name__)
T = TypeVar("T")

_lock = threading.Lock()
_thread = threading.local()
_seen: int | None = None
_values: dict[Any, Any] = {}


def _key() -> str:
    return f"{getattr(settings, 'HUB_FLOW_NAMESPACE', 'hub')}:config:generation"


def _redis() -> Any:
    from apps.flow.limiter import redis_client

    return redis_client()


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """Read the generation once for a unit of work (one posting run, one event's normalization)
    instead of once per lookup: what it reads is what was current when it started."""
    if getattr(_thread, "pinned", None) is not None:
        yield
        return
    _thread.pinned = _read_generation()
    try:
        yield
    finally:
        _thread.pinned = None


def generation() -> int | None:
    """The current generation, or None when there is no Redis to agree on one (or it is away)."""
    pin = getattr(_thread, "pinned", None)
    return pin if pin is not None else _read_generation()


def _read_generation() -> int | None:
    client = _redis()
    if client is None:
        return None
    try:
        return int(client.get(_key()) or 0)
    except Exception:  # noqa: BLE001 - Redis away: read the database, as without Redis
        log.warning("configuration generation unreadable; reading configuration from the database")
        return None


def _increment() -> None:
    client = _redis()
    if client is not None:
        try:
            client.incr(_key())
        except Exception:  # noqa: BLE001 - while Redis is away no process caches (generation() is None)
            log.warning("could not announce a configuration change to other processes")
    clear_local()


def changed() -> None:
    """Announce a change to cached configuration: now, and again when the transaction commits."""
    _thread.pinned = None  # this unit of work reads the generation afresh from now on
    _increment()
    written()
    transaction.on_commit(_increment)


def written() -> None:
    """This thread's open transaction wrote configuration (or a row a cached value points to): until
    it ends, nothing is cached or served from the cache here, since a rollback would leave copies
    of rows that never existed."""
    if db_connection.in_atomic_block:
        _thread.dirty = True


def _clean() -> bool:
    if not getattr(_thread, "dirty", False):
        return True
    if db_connection.in_atomic_block:
        return False
    _thread.dirty = False  # its transaction is over (committed or rolled back): start afresh
    clear_local()
    return True


def clear_local() -> None:
    global _seen
    with _lock:
        _values.clear()
        _seen = None


def cached(key: Any, load: Callable[[], T]) -> T:
    """``load()``'s result for ``key``, from this process's copy while the generation holds. A
    None result is not kept (the caller creates the row, which is not cached until committed)."""
    global _seen
    current = generation()
    if current is None or not _clean():
        return load()
    with _lock:
        if _seen != current:
            _values.clear()
            _seen = current
        if key in _values:
            return _values[key]  # type: ignore[no-any-return]
    value = load()
    if value is not None:
        with _lock:
            if _seen == current:
                _values[key] = value
    return value


class ConfigQuerySet(models.QuerySet):
    """Announces bulk changes (update, delete, bulk create) the way the signals announce saves."""

    def update(self, **kwargs: Any) -> int:
        count = super().update(**kwargs)
        changed()
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        changed()
        return result

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(objs, *args, **kwargs)
        changed()
        return created

    def bulk_update(self, objs: Any, *args: Any, **kwargs: Any) -> int:
        count = super().bulk_update(objs, *args, **kwargs)
        changed()
        return count


def _on_change(sender: type[models.Model], **kwargs: Any) -> None:
    changed()


def watch(*model_classes: type[models.Model]) -> None:
    """Announce every save and delete of these models (called from their apps' ``ready``)."""
    from django.db.models.signals import post_delete, post_save

    for model in model_classes:
        post_save.connect(_on_change, sender=model, dispatch_uid=f"config_cache.save.{model._meta.label}")
        post_delete.connect(_on_change, sender=model, dispatch_uid=f"config_cache.delete.{model._meta.label}")
