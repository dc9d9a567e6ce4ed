"""What every billing source adapter provides: authenticity, event identity, and parsing."""

from __future__ import annotations


class SignatureError(ValueError):
    """The request did not prove it came from the billing engine. The message is safe to return."""


class InvalidPayload(ValueError):
    """The event was authentic but cannot be turned into canonical data; the message says why in
    words an integration engineer (and finance) can act on."""


class IgnoredEvent(Exception):
    """An event type the hub does not post (kept in the inbox, marked ignored)."""
