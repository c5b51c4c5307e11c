"""Real servers on loopback for tests: a uvicorn in a thread, on a free port."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Sandbox:
    """The sandbox over real HTTP, with helpers for its control endpoints."""

    def __init__(self, url: str, smtp_port: int) -> None:
        self.url = url
        self.github_url = url + "/github"
        self.smtp_port = smtp_port
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()

    def fault(self, method: str, path: str, **spec: Any) -> None:
        self.http.post("/_sandbox/faults", json={"method": method, "path": path, **spec}).raise_for_status()

    def calls(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"method": method, "path": path}.items() if v}
        return self.http.get("/_sandbox/calls", params=params).json()

    def mail(self) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/mail").json()

    def slack(self) -> list[dict[str, Any]]:
        return self.http.get("/_sandbox/slack").json()

    def configure_github(self, **config: Any) -> None:
        self.http.post("/_sandbox/github/config", json=config).raise_for_status()
