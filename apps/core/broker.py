"""What the broker holds, for the sweepers: a message that is merely waiting in a long queue must
not be mistaken for a lost one and sent again (under a backlog that would flood the queue with
copies and slow the real work down).

Every message carries the time it was sent (a header set in ``integration_hub/celery.py``). The
queue is first in, first out, so a row sent well before the oldest message still waiting had its
message taken by a worker already; if the row is still not done, that message was lost (a worker
killed with it prefetched, a broker restart) and is sent again. A row sent after it is merely
waiting its turn, however long the backlog."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from celery import current_app

log = logging.getLogger(__name__)

SENT_AT_HEADER = "hub_sent_at"


@dataclass(frozen=True)
class QueueState:
    depth: int
    oldest_sent_at: float | None  # epoch seconds of the message next in line, when it says


def queue_state(queue: str | None = None) -> QueueState | None:
    """A queue's depth (the default queue unless named) and its oldest message's send time, or
    None when the broker cannot say (not Redis, or unreachable)."""
    app = current_app
    if not str(app.conf.broker_url or "").startswith(("redis://", "rediss://")):
        return None
    try:
        with app.connection_for_read() as connection:
            client = connection.default_channel.client
            queue = queue or app.conf.task_default_queue
            depth = int(client.llen(queue))
            # kombu's Redis transport pushes on the left and pops on the right: -1 is next in line.
            raw = client.lindex(queue, -1) if depth else None
    except Exception:  # noqa: BLE001 - broker away: the sweeper falls back to its plain rule
        log.warning("could not read the broker's queue")
        return None
    return QueueState(depth, _sent_at(raw))


def _sent_at(raw: bytes | str | None) -> float | None:
    if not raw:
        return None
    try:
        value = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def resend_patience(stale_seconds: float, now: float | None = None, queue: str | None = None) -> float:
    """How long a sent message may go unprocessed before the sweepers send it again.

    Queue empty (or no broker to ask): the stale limit. Backlog with a stamped oldest message: the
    age of that message plus the stale limit, so only rows sent before it are resent. Backlog
    without a stamp (messages from an older release): ten times the stale limit, at least a minute."""
    state = queue_state(queue)
    if state is None or not state.depth:
        return stale_seconds
    if state.oldest_sent_at is None:
        return max(stale_seconds * 10, 60.0)
    head_age = max((now or time.time()) - state.oldest_sent_at, 0.0)
    return head_age + stale_seconds
