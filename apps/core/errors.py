"""The one error taxonomy every connector raises, and the posting executor acts on.

A connector call has three outcomes, not two: it succeeds, it fails, or we do not know
(the request may have reached the ERP and committed there). Each failure class carries
what the executor needs to choose between retry, verify-by-lookup and parking.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class. ``detail`` is the technical text engineers read beside the finance message."""

    def __init__(self, detail: str = "", *, status: int | None = None, body_excerpt: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.body_excerpt = body_excerpt[:2000]

    def technical_detail(self) -> str:
        parts = [f"{type(self).__name__}: {self.detail}"]
        if self.status is not None:
            parts.append(f"HTTP status: {self.status}")
        if self.body_excerpt:
            parts.append(f"Response excerpt: {self.body_excerpt}")
        return "\n".join(parts)


class TransientError(ConnectorError):
    """The ERP did not do the work and will probably accept it later (5xx before commit, 429,
    lock contention, connection refused). Retry with backoff; honour ``retry_after`` seconds."""

    def __init__(self, detail: str = "", *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class Throttled(TransientError):
    """The hub's own request budget for the ERP is spent: nothing was sent. Waits without using
    an attempt."""


class UncertainOutcome(ConnectorError):
    """The request may have reached the ERP (read timeout, connection reset after send, 5xx after
    send). Never retry blindly: look the document up by its external reference first."""


class BusinessRuleError(ConnectorError):
    """The ERP refused the document for a reason finance can act on (unmapped account, closed
    period, missing tax registration). Parked; no automatic retry."""

    def __init__(
        self,
        code: str,
        finance_message: str,
        detail: str = "",
        *,
        params: dict[str, str] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(detail or finance_message, **kwargs)  # type: ignore[arg-type]
        self.code = code
        self.finance_message = finance_message
        # Named facts (an account code, a tax name) the console's message catalogue words for finance.
        self.params = params or {}


class ConfigurationError(ConnectorError):
    """The hub's own configuration for this ERP is wrong or incomplete. Parked for engineers."""

    def __init__(
        self,
        detail: str = "",
        *,
        finance_message: str = "",
        code: str = "configuration",
        params: dict[str, str] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(detail, **kwargs)  # type: ignore[arg-type]
        self.code = code
        self.params = params or {}
        self.finance_message = finance_message or (
            "The ERP connection is not configured correctly; an integration engineer must fix it."
        )


class AuthenticationError(ConfigurationError):
    """Credentials were refused. Parked for engineers."""

    def __init__(self, detail: str = "", **kwargs: object) -> None:
        super().__init__(
            detail,
            code="authentication",
            finance_message="The hub could not sign in to the ERP; an integration engineer must renew the credentials.",
            **kwargs,  # type: ignore[arg-type]
        )
