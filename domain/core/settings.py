"""One settings class: every knob is an environment variable with a documented default."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Development defaults. Only ENVIRONMENT=development or test accepts them; production refuses to start.
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
DEV_GITHUB_WEBHOOK_SECRET = "dev-only-github-webhook-secret"
DEV_HITL_LINK_SECRET = "dev-only-hitl-link-secret-change-me-0123456789"
# The sandbox's token (it accepts any); production must talk to the real services with real tokens.
SANDBOX_TOKEN = "sandbox-token"
SANDBOX_PAYMENTS_KEY = "sk_test_sandbox"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and route them to psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def masked_url(url: str) -> str:
    """`url` as any message or log line may show it: its password masked. A URL SQLAlchemy cannot parse
    keeps only its scheme and what follows its last `@` (the user and password may be anywhere before)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "", url
        _userinfo, at, host = rest.rpartition("@")
        return f"{scheme}{sep}***@{host}" if at else url


# The exit status of a process that refuses its configuration (as argparse's for a bad command line): the
# supervisor does not restart a service that exits with it.
EXIT_MISCONFIGURED = 2
CRON_EXPECTED = (
    "five fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12) day-of-week (0-6), "
    "each *, a number, a range a-b, a list a,b or a step */n"
)


class ConfigurationError(ValueError):
    """Settings a process cannot start with; the message is one line naming the setting, its value as a log
    line may show it, and what is expected."""


def cron_problem(cron: str) -> str | None:
    """Why `cron` is not a cron expression Dagster schedules (five fields, no seconds, a day that exists),
    or None."""
    try:
        if not croniter.is_valid(cron) or len(croniter.expand(cron)[0]) != 5:
            return f"expected {CRON_EXPECTED}"
        days, months = croniter.expand(cron)[0][2:4]
    except (ValueError, KeyError):  # croniter's errors are ValueErrors
        return f"expected {CRON_EXPECTED}"
    if months == [2] and len(days) == 1 and days[0] in (30, 31):
        return "expected a day that exists (February has no 30th or 31st)"
    return None


# The project folder (a checkout: the folder holding domain/).
PROJECT_DIR = Path(__file__).resolve().parents[2]


def default_database_url() -> str:
    """The store of every entry point of a checkout when DATABASE_URL is unset: var/wrk.db in the project
    folder, whatever DAGSTER_HOME or the working folder (`make run` sets the same file)."""
    return f"sqlite:///{PROJECT_DIR / 'var' / 'wrk.db'}"


def default_data_dir() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    return Path(home) if home else Path("var")


def tenant_limit_value(value: int) -> int:
    """A per-tenant run limit: at least 1, or -1 for none (0 would keep every tenant's runs queued)."""
    if value == 0 or value < -1:
        raise ValueError("TENANT_MAX_CONCURRENT_RUNS must be -1 (no limit) or at least 1")
    return value


class Settings(BaseSettings):
    # No input value in a validation error: it would print every setting's value, secrets included.
    model_config = SettingsConfigDict(extra="ignore", env_file=None, hide_input_in_errors=True)

    environment: Literal["development", "test", "production"] = "development"

    # Logs (domain/core/logs.py): the lowest level written, and one JSON object per line or plain text
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Store
    database_url: str = Field(default="")
    database_echo: bool = False
    # PostgreSQL connections per process (engine_for): kept open, and extra ones beyond them opened and
    # closed again when more are busy at once. The API's workers run up to 40 store calls at once each.
    database_pool_size: int = Field(default=16, ge=1, le=200)
    database_max_overflow: int = Field(default=4, ge=0, le=200)

    # HTTP API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_algorithms: list[str] = ["HS256"]
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str = "wrk-orchestration-dev"
    jwt_audience: str = "wrk-orchestration"
    github_webhook_secret: SecretStr = SecretStr(DEV_GITHUB_WEBHOOK_SECRET)
    # Users' live updates and /metrics (api/routes/live.py, api/routes/metrics.py)
    phase_stream_poll_s: float = Field(default=0.5, gt=0)  # SQLite: how often the API looks for new events
    phase_stream_resync_s: float = Field(default=30.0, gt=0)  # a subscriber re-reads this often regardless
    metrics_token: SecretStr | None = None  # a scraper's bearer token; unset: /metrics open on loopback only

    # Request rules (api/request_rules.py): what one request may carry, for every route. A body past its
    # limit is refused with 413 while it is read, before any signature or JSON is looked at; JSON nested
    # deeper than the depth is 422. Webhooks take GitHub's own cap on a delivery (25 MB).
    request_body_max_bytes: int = Field(default=1_048_576, ge=1024)
    webhook_body_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    request_json_max_depth: int = Field(default=32, ge=2, le=256)
    phase_max_matches: int = Field(default=1000, ge=1)  # matches one phase-4 POST may carry (422 past it)

    # Outside world (the sandbox on :8900 by default)
    sandbox_port: int = 8900
    wrk_api_url: str = "http://127.0.0.1:8900"
    wrk_api_token: SecretStr = SecretStr(SANDBOX_TOKEN)
    github_api_url: str = "http://127.0.0.1:8900/github"
    github_token: SecretStr = SecretStr(SANDBOX_TOKEN)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8925
    smtp_sender: str = "orchestration@wrk.local"
    slack_webhook_url: str | None = None
    ops_email: str = "ops@wrk.local"

    # Outbound HTTP: one retry policy for every client
    http_connect_timeout_s: float = 5.0
    http_read_timeout_s: float = 30.0
    retry_max_attempts: int = 4
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 30.0

    # Dagster
    dagster_port: int = 3000
    sensor_interval_seconds: int = 5
    # Runs of one tenant in progress at once (the run coordinator, orchestration_defs/concurrency.py); the
    # rest wait queued while other tenants' runs start. -1: no per-tenant limit.
    tenant_max_concurrent_runs: int = 4  # checked by tenant_limit_value

    @field_validator("database_url")
    @classmethod
    def _a_database_url(cls, value: str) -> str:
        if value:
            try:
                make_url(normalise_url(value)).get_dialect()
            except (ArgumentError, ValueError):
                raise ValueError(
                    "expected a database URL SQLAlchemy can open, such as sqlite:///var/wrk.db or "
                    "postgresql://user:password@host:5432/wrk"
                ) from None
        return value

    @field_validator(
        "batch_risk_snapshot_backfill_cron",
        "batch_outcome_sync_cron",
        "batch_industry_benchmarks_cron",
        "batch_risk_clustering_cron",
        "batch_account_health_cron",
        "batch_propagation_cron",
        "batch_model_monitoring_cron",
    )
    @classmethod
    def _a_cron(cls, value: str) -> str:
        problem = cron_problem(value.strip())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("batch_timezone")
    @classmethod
    def _a_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected a time zone of the IANA database, such as UTC or Europe/Paris") from None
        return value

    @field_validator("batch_start")
    @classmethod
    def _an_iso_moment(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 date or date-time, such as 2026-01-01") from None
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("tenant_max_concurrent_runs")
    @classmethod
    def _a_limit_or_none(cls, value: int) -> int:
        return tenant_limit_value(value)

    # Where steps run: `multiprocess` (this machine: the release job's fork-server executor),
    # or `celery` (dagster-celery: steps on Celery workers, on any machine, over CELERY_BROKER_URL,
    # default RABBITMQ_URL); CELERY_WORKERS is how many local workers `make run` starts (0: none, run
    # them elsewhere), each with CELERY_WORKER_CONCURRENCY step processes (orchestration_defs/executors.py).
    executor: Literal["multiprocess", "celery"] = "multiprocess"
    celery_broker_url: SecretStr | None = None
    celery_workers: int = Field(default=2, ge=0, le=64)
    celery_worker_concurrency: int = Field(default=2, ge=1, le=64)

    # Release builds
    release_dir: str = ""  # default: $DAGSTER_HOME/releases (or ./var/releases)
    release_gpg_key: str | None = None  # path to an OpenPGP secret key (armored): signs SHA256SUMS.asc
    release_gpg_passphrase: SecretStr | None = None

    # GitHub App authentication (instead of GITHUB_TOKEN when GITHUB_APP_ID is set)
    github_app_id: str | None = None
    github_app_private_key: SecretStr | None = None  # PEM text, or the path to a PEM file
    github_app_installation_id: str | None = None

    # Housekeeping by the queue sweeper: how long finished things are kept
    queue_retention_days: float = 7.0  # done and cancelled triggers (dead ones stay until requeued)
    idempotency_key_retention_days: float = 1.0  # a retried request within this window gets its answer again
    webhook_delivery_retention_days: float = 7.0  # GitHub redelivers for 3 days; a repeat within 7 is dropped
    consumed_event_retention_days: float = 7.0  # consumed event ids: a repeat within this window is recognised
    release_dir_retention_days: float = 14.0  # release working folders untouched this long are removed
    # Users' phase event streams (replay after a reconnect): seconds, or an ISO 8601 duration (P7D)
    phase_events_retention: timedelta = Field(default=timedelta(days=7), gt=timedelta(0))

    # Flow policy
    project_live_on_deploy: bool = True
    # Deploys (Flow 24/24B, rollback): the most one request may spend on the WRK Platform, retries
    # included; past it the API answers 503 with Retry-After and reconciliation finishes the deploy.
    deploy_deadline_s: float = Field(default=30.0, gt=0)

    # Batch jobs (domain/batch/batch_jobs.py): each job's cron (BATCH_<JOB>_CRON), the crons' time zone, the
    # first partition; where the triggers go (RABBITMQ_URL unset: they stay in the store's outbox).
    batch_timezone: str = "UTC"
    batch_start: str = "2026-01-01"
    batch_risk_snapshot_backfill_cron: str = "0 2 * * *"
    batch_outcome_sync_cron: str = "0 * * * *"
    batch_industry_benchmarks_cron: str = "0 3 * * 1"
    batch_risk_clustering_cron: str = "0 4 * * *"
    batch_account_health_cron: str = "0 */6 * * *"
    batch_propagation_cron: str = "30 * * * *"
    batch_model_monitoring_cron: str = "0 6 * * *"
    # A batch asset's freshness check fails once its last update is older than its cron's longest gap
    # plus this grace (time for the scheduled run to start and publish).
    batch_freshness_grace_s: float = Field(default=900.0, gt=0)
    rabbitmq_url: SecretStr | None = None
    # How batch-job (and workflow publish-step) messages travel: `rabbitmq` (RABBITMQ_URL: published by
    # the runs and the relay) or `outbox` (delivered in the store's outbox, read through the API). Unset:
    # rabbitmq with RABBITMQ_URL, else outbox; production must set RABBITMQ_URL or choose the outbox.
    batch_transport: Literal["rabbitmq", "outbox"] | None = None
    bi_batch_jobs_queue: str = "bi_batch_jobs"
    bi_batch_jobs_exchange: str = ""  # "" is AMQP's default exchange (routing key = queue name)
    outbox_alert_after_s: float = Field(default=900.0, gt=0)

    # Workflow executions: the six services' base URLs (SERVICE_<NAME>_URL; empty: the
    # sandbox's emulator at <sandbox>/services/<name>), how many ready steps of one execution run at once,
    # and the RabbitMQ queues of consumed events (comma-separated; drained when RABBITMQ_URL is set).
    service_integration_manager_url: str = ""
    service_risk_analytics_url: str = ""
    service_ml_service_url: str = ""
    service_forecasting_url: str = ""
    service_recommendations_url: str = ""
    service_adaptive_learning_url: str = ""
    workflow_max_parallel_steps: int = Field(default=4, ge=1, le=64)
    workflow_event_queues: str = "workflow_orchestrator_events"
    # Approvals (HITL): the secret signing the e-mails' decision links, and the base URL they point at
    # (default: this API on API_PORT); how long a standalone request waits when it names no timeout.
    hitl_link_secret: SecretStr = SecretStr(DEV_HITL_LINK_SECRET)
    hitl_link_base_url: str = ""
    hitl_default_timeout_s: float = Field(default=86400.0, gt=0)
    # The approvals inbox (/hitl; its cookie is signed with a key derived from HITL_LINK_SECRET): the
    # cookie's Secure flag (browsers keep a Secure cookie from http://127.0.0.1 and localhost too), and a
    # session's longest life (never past its token's expiry).
    hitl_cookie_secure: bool = True
    hitl_session_max_age_s: int = Field(default=28800, ge=60)
    # /metrics' wrk_approvals_expiring_soon: pending approvals whose expiry is this close.
    approval_expiry_warning_seconds: float = Field(default=3600.0, gt=0)
    # The hosts a standalone request's callback_url may name (the orchestrator POSTs there): "host" exactly,
    # or ".example.com" for its subdomains. Empty: any host.
    approval_callback_hosts: list[str] = []
    # Decision fields an approval may declare: how many, and the longest string value (or default) in characters.
    decision_fields_max: int = Field(default=20, ge=1, le=200)
    decision_field_max_length: int = Field(default=2000, ge=1, le=100_000)
    # Seven-phase pipeline (domain/phases/phases.py, orchestration_defs/phases.py)
    integrations_api_url: str = ""  # default: the sandbox's emulator, http://127.0.0.1:SANDBOX_PORT/integrations
    integrations_api_token: SecretStr = SecretStr(SANDBOX_TOKEN)
    payments_api_url: str = ""  # a Stripe-like API; default: the sandbox's, http://127.0.0.1:SANDBOX_PORT/payments
    payments_api_key: SecretStr = SecretStr(SANDBOX_PAYMENTS_KEY)
    phase_callback_url: str = ""  # this API as the integrations backend reaches it; default http://127.0.0.1:API_PORT
    proof_packet_dir: str = ""  # default: $DAGSTER_HOME/proof-packets (or ./var/proof-packets)
    # The phase worker runs (orchestration_defs/phases.py): how many live at once, how many triggers one
    # claims at a time and processes at once, and when one ends (a new one, with the code of the day, follows)
    phase_workers: int = Field(default=2, ge=1)  # the phase sensor launches no more while this many live
    phase_batch_size: int = Field(default=100, ge=1, le=1000)  # triggers a worker claims at a time
    phase_row_workers: int = Field(default=4, ge=1, le=32)  # triggers of one worker processed at once
    phase_run_max_triggers: int = Field(default=1000, ge=1, le=1000)  # a worker ends after this many triggers
    phase_worker_idle_s: float = Field(default=60.0, ge=0)  # ... or after this long with none to claim
    phase_worker_max_s: float = Field(default=900.0, gt=0)  # ... or this long after it started
    # PostgreSQL: a worker claims when an enqueue notifies it, and at least this often (backoffs ending,
    # requeues); SQLite: it polls this often
    phase_worker_poll_s: float = Field(default=0.25, gt=0)
    phase_sensor_interval_s: int = Field(default=1, ge=1)
    # A worker's row threads run at this nice value (Linux: +0..19), so on a shared machine the API's answers
    # come before the pipeline's work (on Kubernetes a pod has its own CPU: no effect)
    phase_worker_nice: int = Field(default=10, ge=0, le=19)
    sandbox_phase_delay_s: float = Field(default=1.0, ge=0)  # the sandbox's integrations call the next phase back

    @model_validator(mode="after")
    def _defaults_and_production_guard(self) -> Settings:
        # As under `make run` (scripts/supervise.py): the sandbox's URLs and SMTP sink follow SANDBOX_PORT
        # unless set themselves, so `wrk-orch` beside a stack on other ports talks to that stack's sandbox.
        if "wrk_api_url" not in self.model_fields_set:
            self.wrk_api_url = f"http://127.0.0.1:{self.sandbox_port}"
        if "github_api_url" not in self.model_fields_set:
            self.github_api_url = f"http://127.0.0.1:{self.sandbox_port}/github"
        if "smtp_port" not in self.model_fields_set:
            self.smtp_port = self.sandbox_port + 25
        if not self.hitl_link_base_url:
            self.hitl_link_base_url = f"http://127.0.0.1:{self.api_port}"
        if not self.integrations_api_url:
            self.integrations_api_url = f"http://127.0.0.1:{self.sandbox_port}/integrations"
        if not self.payments_api_url:
            self.payments_api_url = f"http://127.0.0.1:{self.sandbox_port}/payments"
        if not self.phase_callback_url:
            self.phase_callback_url = f"http://127.0.0.1:{self.api_port}"
        if not self.proof_packet_dir:
            self.proof_packet_dir = str((default_data_dir() / "proof-packets").resolve())
        if not self.release_dir:
            self.release_dir = str((default_data_dir() / "releases").resolve())
        if not self.database_url:
            self.database_url = default_database_url()
        if self.batch_transport == "rabbitmq" and self.rabbitmq_url is None:
            raise ValueError("BATCH_TRANSPORT=rabbitmq needs RABBITMQ_URL")
        if self.batch_transport is None and (self.rabbitmq_url is not None or self.environment != "production"):
            self.batch_transport = "rabbitmq" if self.rabbitmq_url is not None else "outbox"
        if self.environment == "production":
            dev = []
            if self.batch_transport is None:
                # Else batch messages would stay in the outbox with no one told: a broker, or the outbox
                # chosen on purpose.
                dev.append("RABBITMQ_URL unset (set it, or BATCH_TRANSPORT=outbox)")
            if self.jwt_secret.get_secret_value() == DEV_JWT_SECRET and "HS256" in self.jwt_algorithms:
                dev.append("JWT_SECRET")
            if self.github_webhook_secret.get_secret_value() == DEV_GITHUB_WEBHOOK_SECRET:
                dev.append("GITHUB_WEBHOOK_SECRET")
            if self.hitl_link_secret.get_secret_value() == DEV_HITL_LINK_SECRET:
                dev.append("HITL_LINK_SECRET")
            dev.extend(self._sandbox_settings())
            if dev:
                raise ValueError(
                    f"ENVIRONMENT=production refuses the development defaults or the sandbox in: {', '.join(dev)} "
                    "(expected each set to the production service or secret)"
                )
        return self

    def _sandbox_settings(self) -> list[str]:
        """The outside-world settings that still point at the sandbox: its token or key, a loopback URL on
        the sandbox's port, or a workflow step service left unset (it falls back to the sandbox's): a
        production process must not quietly build, deploy, charge fees or call services against an
        emulator."""
        found = []
        for url_name, url, token_name, token, sandbox_value in (
            ("WRK_API_URL", self.wrk_api_url, "WRK_API_TOKEN", self.wrk_api_token, SANDBOX_TOKEN),
            ("GITHUB_API_URL", self.github_api_url, "GITHUB_TOKEN", self.github_token, SANDBOX_TOKEN),
            (
                "INTEGRATIONS_API_URL",
                self.integrations_api_url,
                "INTEGRATIONS_API_TOKEN",
                self.integrations_api_token,
                SANDBOX_TOKEN,
            ),
            (
                "PAYMENTS_API_URL",
                self.payments_api_url,
                "PAYMENTS_API_KEY",
                self.payments_api_key,
                SANDBOX_PAYMENTS_KEY,
            ),
        ):
            if self._on_the_sandbox(url):
                found.append(url_name)
            if token.get_secret_value() == sandbox_value:
                found.append(token_name)
        for name in type(self).model_fields:
            if name.startswith("service_") and name.endswith("_url"):
                url = str(getattr(self, name) or "").strip()
                if not url or self._on_the_sandbox(url):
                    found.append(name.upper())
        return found

    def _on_the_sandbox(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.hostname or "").lower() in LOOPBACK_HOSTS and parts.port == self.sandbox_port

    def with_overrides(self, **values: object) -> Settings:
        """A copy with the given non-empty values (resources' config, tests); secrets wrapped."""
        update: dict[str, object] = {}
        for name, value in values.items():
            if value in (None, "", 0):
                continue
            field = type(self).model_fields[name]
            secret = field.annotation is SecretStr or SecretStr in get_args(field.annotation)
            update[name] = SecretStr(str(value)) if secret else value
        return self.model_copy(update=update) if update else self


def shown_value(name: str, value: object) -> str:
    """A setting's value as a message may show it: secrets masked, a URL's password masked."""
    field = Settings.model_fields.get(name)
    if field is not None and "SecretStr" in str(field.annotation):
        return "'**********'"
    text = str(value)
    return repr(masked_url(text) if "://" in text else text)


def misconfiguration(error: ValidationError) -> str:
    """One line for the settings' validation errors: each setting, its shown value, what is expected."""
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a check over several settings names them itself
            problems.append(message)
            continue
        name = str(item["loc"][0])
        value = os.environ.get(name.upper(), item.get("input"))
        problems.append(f"{name.upper()}={shown_value(name, value)}: {message}")
    return "; ".join(problems)


def load_settings() -> Settings:
    """The settings from the environment; ConfigurationError (one line) when they cannot be used."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(misconfiguration(exc)) from None


@contextmanager
def exit_when_misconfigured(program: str) -> Iterator[None]:
    """An entry point's guard: a ConfigurationError ends the process with its one line on stderr and
    EXIT_MISCONFIGURED, no traceback."""
    try:
        yield
    except ConfigurationError as exc:
        print(f"{program}: configuration: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_MISCONFIGURED) from None


class _SettingsCache:
    """`get_settings()`: the settings read once per process. `cache_clear()` makes the next call read the
    environment again; a read that started before the clear (on another thread) is returned to its caller
    but not kept, so a background thread can never store settings from before a change of environment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._settings: Settings | None = None

    def __call__(self) -> Settings:
        with self._lock:
            if self._settings is not None:
                return self._settings
            generation = self._generation
        settings = load_settings()
        with self._lock:
            if self._generation == generation and self._settings is None:
                self._settings = settings
            return self._settings if self._settings is not None else settings

    def cached(self) -> Settings | None:
        """The settings kept, if any (tests check that a thread built none)."""
        return self._settings

    def cache_clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._settings = None


get_settings = _SettingsCache()
