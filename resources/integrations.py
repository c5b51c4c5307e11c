"""The integrations backend's client (sync, detection, evidence matching, claim submission, payout
monitoring, learning pipeline). Each call starts work over there and returns at
once; the backend reports the end of that work by calling our phase endpoint back (`callback_url`).
Every call carries an idempotency key derived from the trigger, so a retried phase starts nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.settings import Settings, get_settings
from domain.urls import header_value
from resources.http import HttpClient
from resources.retry import RetryPolicy


class IntegrationsClient(HttpClient):
    service = "integrations"

    def __init__(self, base_url: str, token: str, callback_url: str, **kwargs: Any) -> None:
        super().__init__(base_url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        self.callback_url = callback_url.rstrip("/")

    def _start(
        self, path: str, body: dict[str, Any], idempotency_key: str, retry: RetryPolicy | None
    ) -> dict[str, Any]:
        response = self.request(
            "POST",
            path,
            json={**body, "callback_url": self.callback_url},
            headers={"Idempotency-Key": header_value(idempotency_key)},
            retry=retry,
        )
        answer: dict[str, Any] = response.json()
        return answer

    # `journey` is whose work it is: tenant_id, user_id, sync_id and seller_id.

    def start_sync(self, journey: Mapping[str, Any], key: str, retry: RetryPolicy | None = None) -> dict[str, Any]:
        """Phase 1: the OAuth is done; sync the seller's data (the backend calls phase 2 when it ends)."""
        return self._start("/v1/syncs", dict(journey), key, retry)

    def start_detection(self, journey: Mapping[str, Any], key: str, retry: RetryPolicy | None = None) -> dict[str, Any]:
        """Phase 2: the sync is done; detect claimable discrepancies (then phase 3)."""
        return self._start("/v1/detections", dict(journey), key, retry)

    def start_evidence_matching(
        self, journey: Mapping[str, Any], key: str, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        """Phase 3: detection is done; match evidence to the claims (then phase 4 with the matches)."""
        return self._start("/v1/evidence-matching", dict(journey), key, retry)

    def submit_claim(
        self, journey: Mapping[str, Any], claim: Mapping[str, Any], key: str, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        """Phase 4, auto-submit: file the claim (then phase 5)."""
        return self._start("/v1/claims", {**journey, **claim}, key, retry)

    def start_payout_monitoring(
        self, journey: Mapping[str, Any], claim: Mapping[str, Any], key: str, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        """Phase 5: watch the submitted claim (then phase 7 on payout, or phase 6 on rejection)."""
        return self._start("/v1/payout-monitoring", {**journey, **claim}, key, retry)

    def trigger_learning_pipeline(
        self, *, tenant_id: str, user_id: str, record: dict[str, Any], key: str, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        """Phase 6: feed a rejection to the learning pipeline (no call back)."""
        return self._start("/v1/learning-pipeline", {"tenant_id": tenant_id, "user_id": user_id, **record}, key, retry)


def integrations_client(settings: Settings | None = None) -> IntegrationsClient:
    settings = settings or get_settings()
    return IntegrationsClient(
        settings.integrations_api_url,
        settings.integrations_api_token.get_secret_value(),
        settings.phase_callback_url,
        connect_timeout_s=settings.http_connect_timeout_s,
        read_timeout_s=settings.http_read_timeout_s,
        retry=RetryPolicy.from_settings(settings),
    )
