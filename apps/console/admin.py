from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.timesince import timesince

from apps.console.models import PostingException
from apps.posting.admin import PostingAdminBase, exception_states


@admin.register(PostingException)
class PostingExceptionAdmin(PostingAdminBase):
    """The finance exception queue: what needs a person, oldest first, in finance's words."""

    list_display = (
        "id",
        "age",
        "error_category",
        "finance_message",
        "source_document",
        "operation",
        "connection",
        "state",
        "correlation_timeline",
    )
    list_display_links = ("id", "finance_message")
    list_filter = ("error_category", "state", "error_code", "operation", "connection", "source")
    ordering = ("created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PostingException]:
        return super().get_queryset(request).filter(state__in=exception_states())

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: PostingException) -> str:
        return timesince(obj.created_at, timezone.now())
