"""The base of every HTTP client: one `httpx.Client`, timeouts, error mapping and the retry policy."""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from resources.errors import (
    NotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    ServiceTimeout,
    ValidationRejected,
)
from resources.retry import RetryPolicy

log = logging.getLogger(__name__)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process, shared by every client (SSLContext is thread-safe). httpx builds a
    new one per client, loading the CA bundle each time (a visible share of a release step's CPU), where
    a GitHub client alone holds up to three HTTP clients."""
    return httpx.create_ssl_context()


class HttpClient:
    service = "http"

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers or {},
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            transport=transport,
            auth=auth,
            verify=tls_context(),
        )
        self.attempts = 0  # calls sent over the wire, retries included (for metrics and tests)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def classify(self, response: httpx.Response) -> Exception | None:
        """The error an answer means, or None for success. Subclasses refine (GitHub's 403s)."""
        status = response.status_code
        if status < 400:
            return None
        details = _body(response)
        message = f"{response.request.method} {response.request.url.path} answered {status}"
        if status == 429:
            return RateLimited(
                self.service,
                message,
                status=status,
                details=details,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status >= 500:
            # 503 may say when to come back (RFC 9110 §10.2.3); the retry policy honours it, capped.
            return RetryableError(
                self.service,
                message,
                status=status,
                details=details,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status == 404:
            return NotFound(self.service, message, status=status, details=details)
        if status == 422:
            return ValidationRejected(self.service, message, status=status, details=details)
        return PermanentError(self.service, message, status=status, details=details)

    @contextmanager
    def _mapped(self, method: str, path: str) -> Iterator[None]:
        """Transport failures as the one error family: timeouts and broken connections are retryable."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise ServiceTimeout(self.service, f"{method} {path} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise RetryableError(self.service, f"{method} {path} failed: {exc!r}") from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        retry: RetryPolicy | None = None,
        upload: Path | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call through the error mapping and the retry policy. `upload` streams a file as the body
        (opened again for each attempt, its length from the file)."""
        policy = retry or self.retry

        def attempt() -> httpx.Response:
            self.attempts += 1
            with self._mapped(method, path):
                if upload is None:
                    response = self.http.request(method, path, **kwargs)
                else:
                    with upload.open("rb") as body:
                        response = self.http.request(method, path, content=body, **kwargs)
            error = self.classify(response)
            if error is not None:
                raise error
            return response

        return policy.call(attempt, on_retry=self._log_retry(method, path))

    def download(self, url: str, destination: Path, *, retry: RetryPolicy | None = None, **kwargs: Any) -> Path:
        """GET `url` streamed to `destination` (through a `.part` file, so a broken transfer leaves no
        half file under the final name), mapped and retried like every call."""
        policy = retry or self.retry
        partial = destination.with_name(destination.name + ".part")

        def attempt() -> Path:
            self.attempts += 1
            with self._mapped("GET", url), self.http.stream("GET", url, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()  # the error's details
                error = self.classify(response)
                if error is not None:
                    raise error
                destination.parent.mkdir(parents=True, exist_ok=True)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 16):
                        out.write(chunk)
            partial.replace(destination)
            return destination

        return policy.call(attempt, on_retry=self._log_retry("GET", url))

    def _log_retry(self, method: str, path: str) -> Callable[[int, BaseException, float], None]:
        def on_retry(attempt: int, error: BaseException, wait: float) -> None:
            log.warning(
                "%s %s %s: attempt %d failed (%s); retrying in %.2fs",
                self.service,
                method,
                path,
                attempt,
                error,
                wait,
            )

        return on_retry


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]
