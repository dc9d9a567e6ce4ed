"""What ingest tells the rest of the hub, sent inside the transaction that changed the event."""

from __future__ import annotations

from django.dispatch import Signal

# An event could not be normalized (``code`` says why: no_route, invalid_payload, ...).
event_failed = Signal()  # kwargs: event, code, message
# An event was normalized (after a replay, perhaps): whatever held it up is gone.
event_processed = Signal()  # kwargs: event
