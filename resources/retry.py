"""The one retry policy: the one backoff formula (domain/core/backoff.py), a cap, and a maximum of attempts.

Only `RetryableError` is retried; a wait the service asked for (`retry_after`) is honoured, capped by
`max_wait_s`. Every client uses it; a call may override it (`policy.override(max_attempts=1)`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import tenacity

from domain.core import backoff
from domain.core.errors import RetryableError
from domain.core.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_wait_s: float = 300.0  # the longest a service's own retry-after is honoured
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.retry_max_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
        )

    def override(self, **changes: object) -> RetryPolicy:
        return replace(self, **changes)  # type: ignore[arg-type]

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt`: the one formula (domain/core/backoff.py)."""
        return backoff.backoff_seconds(attempt, self.base_delay_s, self.max_delay_s)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.max_wait_s)
        return self.backoff(state.attempt_number)

    def call(self, fn: Callable[[], T], on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
        """Run `fn`, retrying retryable errors; the last error is raised as it is."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and error is not None and state.next_action is not None:
                on_retry(state.attempt_number, error, state.next_action.sleep)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(RetryableError),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)
