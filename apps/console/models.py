from __future__ import annotations

from apps.posting.models import Posting


class PostingException(Posting):
    """Parked and dead postings: the finance exception queue."""

    class Meta:
        proxy = True
        verbose_name = "exception"
        verbose_name_plural = "exceptions (parked and dead postings)"
