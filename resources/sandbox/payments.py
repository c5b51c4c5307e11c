"""A Stripe-like payments emulator: `POST /payments/v1/payment_intents` (form-encoded, `confirm=true`
succeeds at once). Like Stripe, a repeated Idempotency-Key returns the first answer; the same key with
other parameters is refused (400 `idempotency_error`)."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resources.sandbox.state import SandboxState

PREFIX = "/payments/v1"


def routes(state: SandboxState) -> list[Route]:
    async def create(request: Request) -> JSONResponse:
        if not request.headers.get("authorization", "").startswith("Bearer sk_"):
            return JSONResponse({"error": {"type": "authentication_error"}}, status_code=401)
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        try:
            amount = int(form.get("amount", ""))
        except ValueError:
            return JSONResponse({"error": {"type": "invalid_request_error", "param": "amount"}}, status_code=400)
        currency = form.get("currency", "")
        if amount < 0 or len(currency) != 3:
            return JSONResponse({"error": {"type": "invalid_request_error", "param": "currency"}}, status_code=400)
        key = request.headers.get("idempotency-key")
        params = {k: v for k, v in sorted(form.items())}
        with state.lock:
            if key and key in state.payment_intents:
                first = state.payment_intents[key]
                if first["params"] != params:
                    return JSONResponse(
                        {"error": {"type": "idempotency_error", "message": "key reused with other parameters"}},
                        status_code=400,
                    )
                return JSONResponse(first["intent"])
            intent_id = f"pi_{state.next_id()}"
            intent = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": amount,
                "currency": currency,
                "status": "succeeded" if form.get("confirm") == "true" else "requires_confirmation",
                "description": form.get("description", ""),
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            }
            state.payment_intents[key or intent_id] = {"params": params, "intent": intent}
        return JSONResponse(intent)

    async def list_intents(_request: Request) -> JSONResponse:
        with state.lock:
            return JSONResponse([entry["intent"] for entry in state.payment_intents.values()])

    return [
        Route(f"{PREFIX}/payment_intents", create, methods=["POST"]),
        Route("/_sandbox/payments/intents", list_intents, methods=["GET"]),
    ]
