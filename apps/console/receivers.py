"""The console listens to the posting pipeline: a posting that needs a person opens (or updates)
its document's case; a posting that settles may resolve it."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from apps.console import services
from apps.posting import signals
from apps.posting.models import Posting


@receiver(signals.needs_attention, sender=Posting, dispatch_uid="console.open_case")
def open_case(sender: type[Posting], posting: Posting, **kwargs: Any) -> None:
    services.open_or_update_case(posting)


@receiver(signals.settled, sender=Posting, dispatch_uid="console.resolve_case")
def resolve_case(sender: type[Posting], posting: Posting, actor: str = "system", **kwargs: Any) -> None:
    services.resolve_if_settled(posting, actor)
