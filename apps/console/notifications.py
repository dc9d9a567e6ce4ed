"""E-mail to the group that owns a case when it opens, and a daily digest of open cases by age.
Uses Django's mail backend (the console backend in the demo)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from apps.console.models import CaseStatus, ExceptionCase

log = logging.getLogger(__name__)

AGE_BUCKETS = (("under 1 day", 0, 1), ("1-3 days", 1, 3), ("over 3 days", 3, None))


def recipients(group: str) -> list[str]:
    users = get_user_model().objects.filter(is_active=True, groups__name=group).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def case_url(case: ExceptionCase) -> str:
    return settings.HUB_PUBLIC_URL.rstrip("/") + reverse("admin:console_exceptioncase_change", args=[case.pk])


def case_opened(case_id: int) -> int:
    case = ExceptionCase.objects.select_related("connection").filter(pk=case_id).first()
    if case is None:
        return 0
    to = recipients(case.owner_group)
    if not to:
        log.info("no recipient for a new case", extra={"case": case.pk, "group": case.owner_group})
        return 0
    erp = case.connection.name if case.connection else "no ERP"
    subject = f"[integration hub] {case.kind}: {case.source_id} on {erp}"
    body = f"{case.message}\n\nOpen the case: {case_url(case)}\nCorrelation id: {case.correlation_id}\n"
    try:
        return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, to)
    except OSError:
        log.exception("could not send the case e-mail", extra={"case": case.pk})
        return 0


def digest_counts(now: timezone.datetime | None = None) -> dict[str, dict[str, int]]:
    """Open cases per owning group and age bucket."""
    now = now or timezone.now()
    counts: dict[str, dict[str, int]] = {}
    for label, low, high in AGE_BUCKETS:
        cases = ExceptionCase.objects.filter(status=CaseStatus.OPEN, opened_at__lte=now - timedelta(days=low))
        if high is not None:
            cases = cases.filter(opened_at__gt=now - timedelta(days=high))
        for row in cases.values("owner_group").annotate(n=Count("id")):
            counts.setdefault(row["owner_group"], {b[0]: 0 for b in AGE_BUCKETS})[label] = row["n"]
    return counts


def send_digest() -> int:
    sent = 0
    for group, buckets in digest_counts().items():
        to = recipients(group)
        if not to or not sum(buckets.values()):
            continue
        lines = [f"  {label}: {count}" for label, count in buckets.items()]
        body = (
            f"Open exception cases for {group}:\n" + "\n".join(lines) + "\n\nThe console: "
            f"{settings.HUB_PUBLIC_URL.rstrip('/')}{reverse('admin:console_exceptioncase_changelist')}?status=open\n"
        )
        sent += send_mail(
            f"[integration hub] {sum(buckets.values())} open cases", body, settings.DEFAULT_FROM_EMAIL, to
        )
    return sent
