"""What every billing source adapter provides: authenticity, event identity, and parsing.

An adapter is stateless. ``verify`` runs in the web request, before anything is stored: it proves
the body came from the engine and names the event (the inbox deduplicates on its id). ``parse``
runs in the normalization task and turns the stored body into canonical ledger commands.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from apps.ledger.commands import LedgerCommand


class SignatureError(ValueError):
    """The request did not prove it came from the billing engine. The message is safe to return."""


class InvalidPayload(ValueError):
    """The event was authentic but cannot be turned into canonical data; the message says why in
    words an integration engineer (and finance) can act on. ``problems``: one line per bad field."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class IgnoredEvent(Exception):
    """An event type the hub does not post (kept in the inbox, marked ignored)."""


@dataclass(frozen=True)
class Envelope:
    """What the inbox needs to store an event: its id at the engine (the deduplication key), its
    type, and the id of the object it is about."""

    event_id: str
    event_type: str
    object_id: str = ""


@dataclass(frozen=True)
class BackfillItem:
    """One open document read from the engine's API for a backfill, as the inbox stores it, with
    what a person needs to recognise it in a dry run."""

    envelope: Envelope
    body: bytes
    number: str
    customer: str
    currency: str
    total_minor: int
    paid_minor: int
    erp_keys: dict[str, str] = field(default_factory=dict)  # fields an --erp-reference template may use


class SourceAdapter(ABC):
    kind: str
    label: str
    # Request headers kept with the stored event (lower case), for diagnostics and re-verification.
    kept_headers: tuple[str, ...] = ()

    @abstractmethod
    def verify(self, body: bytes, headers: Mapping[str, str], secrets: list[str]) -> Envelope:
        """Raise SignatureError (not from the engine) or InvalidPayload (not an event we can store).

        ``headers`` has lower-case names; ``secrets`` are every active secret of the source, so a
        secret can be rotated without refusing events signed with the previous one."""

    def bind(self, api_settings: Mapping[str, str]) -> SourceAdapter:
        """This adapter for one source whose engine the hub reads objects back from (Recurly's
        webhooks only name the object): ``api_settings`` are the source's, secrets resolved."""
        return self

    def open_invoices(self, since: datetime, until: datetime) -> Iterator[BackfillItem]:
        """Open invoices created in [since, until] from the engine's API, for a backfill."""
        raise NotImplementedError(f"{self.label} sources have no backfill yet")

    @abstractmethod
    def parse(self, body: bytes) -> list[LedgerCommand]:
        """Canonical commands for one stored event; raises IgnoredEvent or InvalidPayload."""
