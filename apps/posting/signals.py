"""What the posting pipeline tells the rest of the hub, sent inside the transaction that changed
the posting, so a listener's writes (an exception case) commit or roll back with it."""

from __future__ import annotations

from django.dispatch import Signal

# A posting now needs a person: parked (business or configuration) or dead (retries spent).
needs_attention = Signal()  # kwargs: posting
# A posting no longer needs anyone: posted (by the ERP, by lookup, or linked by hand) or skipped.
settled = Signal()  # kwargs: posting, actor
