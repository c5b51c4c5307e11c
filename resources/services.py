"""The six services workflow steps call (integration_manager, risk_analytics, ml_service, forecasting,
recommendations, adaptive_learning): one client, the one retry policy, the idempotency key sent as
`Idempotency-Key` so a call sent again (a retry, a resumed run) is done once by the service.

Base URL of each: `SERVICE_<NAME>_URL`, the sandbox's emulator (`<sandbox>/services/<name>`) by default.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx

from domain.settings import Settings, get_settings
from domain.urls import header_value
from domain.workflow_definitions import SERVICES, path_problem
from domain.workflow_engine import CallResult, ServiceCall
from resources.errors import ExternalServiceError
from resources.http import HttpClient
from resources.retry import RetryPolicy


def service_url(settings: Settings, service: str) -> str:
    configured = str(getattr(settings, f"service_{service}_url", "") or "").strip()
    return configured or f"http://127.0.0.1:{settings.sandbox_port}/services/{service}"


class ServiceClient(HttpClient):
    """One service. Thread-safe: each call counts its own attempts (steps run on a thread pool)."""

    def __init__(self, service: str, base_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.service = service

    def call(self, call: ServiceCall) -> CallResult:
        # The definition's rule again: a step stored before it may name a path outside this service.
        escape = path_problem(call.path)
        if escape:
            return CallResult(output=None, attempts=0, error=f"{call.method} {call.path} refused: path {escape}")
        attempts = 0

        def attempt() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            with self._mapped(call.method, call.path):
                response = self.http.request(
                    call.method,
                    call.path,
                    json=call.body if call.method != "GET" else None,
                    headers={
                        "Idempotency-Key": header_value(call.idempotency_key),
                        "X-Tenant-ID": header_value(call.tenant_id),
                        "X-Workflow-Execution-ID": header_value(call.execution_id),
                    },
                    timeout=call.timeout_s,
                )
            error = self.classify(response)
            if error is not None:
                raise error
            return response

        try:
            response = self.retry.call(attempt, on_retry=self._log_retry(call.method, call.path))
        except ExternalServiceError as exc:
            return CallResult(output=None, attempts=attempts, error=f"{exc}"[:4000])
        try:
            body = response.json()
        except ValueError:
            body = response.text[:10_000]
        return CallResult(output=body if isinstance(body, dict) else {"value": body}, attempts=attempts)


class Services:
    """A client per service, made on first use (an httpx client costs an SSL context); `call` is the
    engine's Caller, safe to use from the engine's threads."""

    def __init__(self, settings: Settings | None = None, retry: RetryPolicy | None = None) -> None:
        self.settings = settings or get_settings()
        self.retry = retry or RetryPolicy.from_settings(self.settings)
        self._clients: dict[str, ServiceClient] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> ServiceClient:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = ServiceClient(
                    service,
                    service_url(self.settings, service),
                    connect_timeout_s=self.settings.http_connect_timeout_s,
                    read_timeout_s=self.settings.http_read_timeout_s,
                    retry=self.retry,
                )
            return self._clients[service]

    def call(self, call: ServiceCall) -> CallResult:
        if call.service not in SERVICES:
            return CallResult(output=None, attempts=0, error=f"unknown service {call.service!r}")
        return self.client(call.service).call(call)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
