"""The sandbox reads its settings once, when it is created: its integrations emulator calls the phase
endpoint back later, on the sandbox's own event loop, which in a test process is a thread beside tests
that change the environment and clear the settings' cache. Built there, a settings object read from one
test's environment could land in the cache after the next test had cleared it (its clients then called
the default sandbox port: connection refused)."""

from __future__ import annotations

import jwt
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from domain.core.settings import Settings, get_settings
from resources.sandbox.app import create_app
from tests.servers import ServerThread, until

SANDBOX_SECRET = "the-sandbox's-own-secret-of-at-least-32-bytes"


def test_a_call_back_made_after_the_environment_changed_uses_the_sandboxs_own_settings(monkeypatch):
    received: list[str] = []

    async def phase(request: Request) -> JSONResponse:
        received.append(request.headers["authorization"].removeprefix("Bearer "))
        return JSONResponse({}, status_code=202)

    receiver = ServerThread(Starlette(routes=[Route("/api/v1/workflow/phase/{n}", phase, methods=["POST"])])).start()
    created = Settings(jwt_secret=SecretStr(SANDBOX_SECRET), sandbox_phase_delay_s=0)
    sandbox = ServerThread(create_app(smtp_port=0, settings=created)).start()
    try:
        # The process's settings move on, as the next test's fixtures move them.
        monkeypatch.setenv("JWT_SECRET", "another-secret-of-at-least-thirty-two-bytes")
        get_settings.cache_clear()
        import httpx

        body = {"tenant_id": "t1", "user_id": "u1", "sync_id": "s1", "callback_url": receiver.url}
        answer = httpx.post(
            sandbox.url + "/integrations/v1/syncs", json=body, headers={"Authorization": "Bearer x"}, timeout=60
        )
        assert answer.status_code == 202, answer.text
        (token,) = until(lambda: list(received), "the sandbox's call back of phase 2")
    finally:
        sandbox.stop()
        receiver.stop()
    claims = jwt.decode(token, SANDBOX_SECRET, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["sub"] == "integrations-sandbox"
    assert get_settings.cached() is None  # the sandbox's thread built no settings of the process's
