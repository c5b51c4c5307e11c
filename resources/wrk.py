"""The WRK Platform client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.settings import Settings, get_settings
from domain.urls import header_value, path_segment
from resources.http import HttpClient
from resources.retry import RetryPolicy


@dataclass(frozen=True)
class PlatformWorkflow:
    id: str
    url: str
    active: bool
    name: str
    tenant_id: str


def _workflow(body: dict[str, Any]) -> PlatformWorkflow:
    return PlatformWorkflow(
        id=str(body["id"]),
        url=str(body.get("url", "")),
        active=bool(body.get("active", False)),
        name=str(body.get("name", "")),
        tenant_id=str(body.get("tenant_id", "")),
    )


class WrkPlatformClient(HttpClient):
    service = "wrk_platform"

    def __init__(self, base_url: str, token: str, **kwargs: Any) -> None:
        super().__init__(base_url, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def create_workflow(
        self,
        name: str,
        blueprint: dict[str, Any],
        tenant_id: str,
        idempotency_key: str,
        retry: RetryPolicy | None = None,
    ) -> PlatformWorkflow:
        """`POST /wrk-api/workflows`. The idempotency key makes a retried or re-run call return the
        workflow the first call created instead of a second one."""
        response = self.request(
            "POST",
            "/wrk-api/workflows",
            json={"name": name, "blueprint": blueprint, "tenant_id": tenant_id},
            headers={"Idempotency-Key": header_value(idempotency_key)},
            retry=retry,
        )
        return _workflow(response.json())

    def activate_workflow(
        self, workflow_id: str, retry: RetryPolicy | None = None, timeout: float | None = None
    ) -> PlatformWorkflow:
        path = f"/wrk-api/workflows/{path_segment(workflow_id)}/activate"
        return _workflow(self.request("PATCH", path, retry=retry, **_timeout(timeout)).json())

    def deactivate_workflow(
        self, workflow_id: str, retry: RetryPolicy | None = None, timeout: float | None = None
    ) -> PlatformWorkflow:
        path = f"/wrk-api/workflows/{path_segment(workflow_id)}/deactivate"
        return _workflow(self.request("PATCH", path, retry=retry, **_timeout(timeout)).json())

    def get_workflow(
        self, workflow_id: str, retry: RetryPolicy | None = None, timeout: float | None = None
    ) -> PlatformWorkflow:
        path = f"/wrk-api/workflows/{path_segment(workflow_id)}"
        return _workflow(self.request("GET", path, retry=retry, **_timeout(timeout)).json())


def _timeout(seconds: float | None) -> dict[str, Any]:
    """A per-call timeout (a deploy's remaining deadline); none given keeps the client's own (httpx
    reads `timeout=None` as "no timeout", so it is not passed at all)."""
    return {} if seconds is None else {"timeout": max(seconds, 0.001)}


def wrk_client(settings: Settings | None = None) -> WrkPlatformClient:
    settings = settings or get_settings()
    return WrkPlatformClient(
        settings.wrk_api_url,
        settings.wrk_api_token.get_secret_value(),
        connect_timeout_s=settings.http_connect_timeout_s,
        read_timeout_s=settings.http_read_timeout_s,
        retry=RetryPolicy.from_settings(settings),
    )
