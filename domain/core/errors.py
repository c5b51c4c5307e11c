"""One error hierarchy for every client of the outside world, defined in the domain so the rules that
react to a platform error (the deploy saga) import no adapter; the clients in resources/ raise them.

`RetryableError` is worth another attempt (connection errors, timeouts, 5xx, 429, rate limits);
`PermanentError` is not (other 4xx). The retry policy looks only at this distinction.
"""

from __future__ import annotations

from typing import Any


class ExternalServiceError(Exception):
    def __init__(
        self,
        service: str,
        message: str,
        *,
        status: int | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.details = details
        self.retry_after = retry_after  # seconds the service asked us to wait, when it said


class RetryableError(ExternalServiceError):
    """Worth another attempt."""


class ServiceTimeout(RetryableError):
    """No answer in time (connect or read)."""


class RateLimited(RetryableError):
    """429, or a GitHub 403 with the rate limit exhausted; `retry_after` says how long to wait."""


class PermanentError(ExternalServiceError):
    """Another attempt would get the same answer."""


class NotFound(PermanentError):
    pass


class ValidationRejected(PermanentError):
    """The service refused the payload (a WRK blueprint validation failure); `details` has its reasons."""


class UnknownTenant(LookupError):
    """A tenant the store does not know: a token or a message may name one. The API answers 403."""
