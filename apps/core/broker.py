"""What the broker holds, for the sweepers: a message that is merely waiting in a long queue must
not be mistaken for a lost one and sent again (under a backlog that would flood the queue with
copies and slow the real work down)."""

from __future__ import annotations

import logging

from celery import current_app

log = logging.getLogger(__name__)


def queue_depth() -> int | None:
    """Messages waiting in the default queue, or None when the broker cannot say (not Redis)."""
    app = current_app
    if not str(app.conf.broker_url or "").startswith(("redis://", "rediss://")):
        return None
    try:
        with app.connection_for_read() as connection:
            return int(connection.default_channel.client.llen(app.conf.task_default_queue))
    except Exception:  # noqa: BLE001 - broker away: the sweeper falls back to its plain rule
        log.warning("could not read the broker's queue depth")
        return None


def resend_patience(stale_seconds: float) -> float:
    """How long a sent message may go unprocessed before the sweepers send it again: the stale
    limit when the queue is empty, ten times it (at least a minute) while a backlog drains."""
    depth = queue_depth()
    return stale_seconds if not depth else max(stale_seconds * 10, 60.0)
