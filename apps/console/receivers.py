"""The console listens to the posting pipeline: a posting that needs a person opens (or updates)
its document's case; a posting that settles may resolve it."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.console import services
from apps.ingest import signals as ingest_signals
from apps.ingest.models import InboxEvent
from apps.posting import signals
from apps.posting.models import Posting
from apps.routing.models import Mapping, RoutingRule


@receiver(signals.needs_attention, sender=Posting, dispatch_uid="console.open_case")
def open_case(sender: type[Posting], posting: Posting, **kwargs: Any) -> None:
    services.open_or_update_case(posting)


@receiver(signals.settled, sender=Posting, dispatch_uid="console.resolve_case")
def resolve_case(sender: type[Posting], posting: Posting, actor: str = "system", **kwargs: Any) -> None:
    services.resolve_if_settled(posting, actor)


@receiver(ingest_signals.event_failed, sender=InboxEvent, dispatch_uid="console.routing_case")
def open_routing_case(sender: type[InboxEvent], event: InboxEvent, code: str, message: str, **kwargs: Any) -> None:
    if code == "no_route":
        services.open_routing_case(event, message)


@receiver(ingest_signals.event_processed, sender=InboxEvent, dispatch_uid="console.resolve_routing_case")
def resolve_routing_case(sender: type[InboxEvent], event: InboxEvent, **kwargs: Any) -> None:
    services.resolve_event_case(event)


@receiver(post_save, sender=RoutingRule, dispatch_uid="console.replay_unrouted")
def replay_unrouted(sender: type[RoutingRule], instance: RoutingRule, **kwargs: Any) -> None:
    reason = f"routing rule saved: {instance}"
    transaction.on_commit(lambda: services.replay_unrouted(reason))


@receiver(post_save, sender=Mapping, dispatch_uid="console.repost_missing_mapping")
def repost_missing_mapping(sender: type[Mapping], instance: Mapping, **kwargs: Any) -> None:
    reason = f"mapping added: {instance}"
    transaction.on_commit(lambda: services.repost_missing_mapping(instance, reason))
