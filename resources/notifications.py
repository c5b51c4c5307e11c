"""Delivery of outbox notifications: e-mail over SMTP, Slack incoming webhooks."""

from __future__ import annotations

import hashlib
import smtplib
from email.message import EmailMessage

import httpx

from domain.models import Notification, NotificationChannel
from domain.notifications import render
from domain.settings import Settings, get_settings
from resources.errors import PermanentError, RetryableError
from resources.http import HttpClient
from resources.retry import RetryPolicy


def outbox_message_id(dedup_key: str) -> str:
    return f"<{hashlib.sha256(dedup_key.encode()).hexdigest()[:32]}@wrk-orchestration>"


class SmtpMailer:
    service = "smtp"

    def __init__(
        self, host: str, port: int, sender: str, *, timeout_s: float = 10.0, retry: RetryPolicy | None = None
    ) -> None:
        self.host, self.port, self.sender, self.timeout_s = host, port, sender, timeout_s
        self.retry = retry or RetryPolicy()

    def send(self, *, to: str, subject: str, body: str, message_id: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        # The outbox key as Message-ID: a receiver can drop a repeat of an at-least-once delivery.
        message["Message-ID"] = outbox_message_id(message_id)
        message.set_content(body)

        def attempt() -> None:
            try:
                with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                    smtp.send_message(message)
            except smtplib.SMTPRecipientsRefused as exc:
                raise PermanentError(self.service, f"recipient refused: {to}") from exc
            except smtplib.SMTPResponseException as exc:
                cls = PermanentError if 500 <= exc.smtp_code < 600 else RetryableError
                raise cls(self.service, f"{exc.smtp_code} {exc.smtp_error!r}", status=exc.smtp_code) from exc
            except (TimeoutError, OSError, smtplib.SMTPException) as exc:
                raise RetryableError(self.service, f"send failed: {exc!r}") from exc

        self.retry.call(attempt)


class SlackWebhook(HttpClient):
    service = "slack"

    def post(self, text: str) -> None:
        self.request("POST", "", json={"text": text})


class Notifier:
    """Sends one outbox row on its channel. In-app rows never get here: stored is delivered."""

    def __init__(self, mailer: SmtpMailer, slack: SlackWebhook | None) -> None:
        self.mailer = mailer
        self.slack = slack

    def __call__(self, notification: Notification) -> None:
        subject, body = render(notification.template, notification.payload)
        if notification.channel == NotificationChannel.EMAIL:
            self.mailer.send(to=notification.recipient, subject=subject, body=body, message_id=notification.dedup_key)
        elif notification.channel == NotificationChannel.SLACK:
            if self.slack is None:
                raise PermanentError("slack", "SLACK_WEBHOOK_URL is not configured")
            self.slack.post(f"*{subject}*\n{body}")
        else:
            raise PermanentError("notifications", f"channel {notification.channel!r} is not delivered")

    def close(self) -> None:
        if self.slack is not None:
            self.slack.close()


def notifier(settings: Settings | None = None) -> Notifier:
    settings = settings or get_settings()
    retry = RetryPolicy.from_settings(settings)
    mailer = SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_sender,
        timeout_s=settings.http_read_timeout_s,
        retry=retry,
    )
    slack = None
    if settings.slack_webhook_url:
        slack = SlackWebhook(
            settings.slack_webhook_url,
            connect_timeout_s=settings.http_connect_timeout_s,
            read_timeout_s=settings.http_read_timeout_s,
            retry=retry,
        )
    return Notifier(mailer, slack)


def is_retryable(error: Exception) -> bool:
    return isinstance(error, RetryableError | httpx.TransportError)
