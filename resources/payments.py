"""A Stripe-like payments client (payment intents, form-encoded, `Idempotency-Key`).

Phase 7 charges the platform fee with one payment intent per proof packet; the idempotency key is fixed
when the packet is first recorded, so a retried phase run gets the first intent back, never a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.settings import Settings, get_settings
from domain.urls import header_value
from resources.http import HttpClient
from resources.retry import RetryPolicy


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    amount: int  # minor units
    currency: str  # lower case, as Stripe writes it
    status: str


class PaymentsClient(HttpClient):
    service = "payments"

    def __init__(self, base_url: str, api_key: str, **kwargs: Any) -> None:
        super().__init__(base_url, headers={"Authorization": f"Bearer {api_key}"}, **kwargs)

    def create_payment_intent(
        self,
        *,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        description: str = "",
        metadata: dict[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> PaymentIntent:
        """`POST /v1/payment_intents` with `confirm=true`: the fee charged at once."""
        form = {
            "amount": str(amount_minor),
            "currency": currency.lower(),
            "confirm": "true",
            "description": description,
            **{f"metadata[{k}]": v for k, v in (metadata or {}).items()},
        }
        response = self.request(
            "POST",
            "/v1/payment_intents",
            data=form,
            headers={"Idempotency-Key": header_value(idempotency_key)},
            retry=retry,
        )
        body = response.json()
        return PaymentIntent(str(body["id"]), int(body["amount"]), str(body["currency"]), str(body["status"]))


def payments_client(settings: Settings | None = None) -> PaymentsClient:
    settings = settings or get_settings()
    return PaymentsClient(
        settings.payments_api_url,
        settings.payments_api_key.get_secret_value(),
        connect_timeout_s=settings.http_connect_timeout_s,
        read_timeout_s=settings.http_read_timeout_s,
        retry=RetryPolicy.from_settings(settings),
    )
