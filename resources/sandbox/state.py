"""The sandbox's in-memory state and its fault injection."""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """The next `count` calls matching method and path answer `status` (or hang, or are delayed)."""

    method: str
    path: str  # a regular expression matched against the whole path
    count: int = 1
    action: str = "error"  # error | timeout | delay
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and re.fullmatch(self.path, path) is not None


@dataclass
class Call:
    method: str
    path: str
    status: int
    at: float
    headers: dict[str, str]


class SandboxState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        self.ids = itertools.count(1000)
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        # WRK Platform
        self.workflows: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[str, str] = {}
        # GitHub
        self.github_config: dict[str, Any] = {
            "default_duration_s": 1.0,
            "supports_return_run_details": True,
            "repos": {},  # name -> {"duration_s": float, "conclusions": [str, ...]}
        }
        self.runs: dict[int, dict[str, Any]] = {}
        self.artifacts: dict[int, dict[str, Any]] = {}
        self.blobs: dict[int, bytes] = {}
        self.releases: dict[int, dict[str, Any]] = {}
        self.assets: dict[int, dict[str, Any]] = {}
        # The six workflow services (resources/sandbox/services.py): answers by idempotency key, effects
        # done per key, latency per service
        self.service_answers: dict[str, Any] = {}
        self.service_effects: dict[str, int] = {}
        self.service_arrivals: dict[str, int] = {}
        self.service_config: dict[str, Any] = {"latency_s": 0.0, "services": {}}
        self.service_in_flight = 0
        self.service_max_in_flight = 0
        # Integrations backend and payments (resources/sandbox/integrations.py, payments.py)
        self.phases: dict[str, Any] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        # Sinks
        self.mail: list[dict[str, Any]] = []
        self.slack: list[dict[str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []  # approval callbacks received (POST /callbacks/...)

    def next_id(self) -> int:
        with self.lock:
            return next(self.ids)

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and fault.matches(method, path):
                    fault.count -= 1
                    return fault
        return None

    def record(self, method: str, path: str, status: int, headers: dict[str, str]) -> None:
        with self.lock:
            self.calls.append(Call(method, path, status, time.time(), headers))
