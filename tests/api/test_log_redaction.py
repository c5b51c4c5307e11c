"""Tokens passed as ?access_token= never reach the API's log."""

from __future__ import annotations

import logging

from api.app import RedactAccessTokens


def test_the_websocket_handshake_line_has_its_access_token_masked() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:1", "/ws/users/demo?after=0&access_token=eyJ.secret.sig"),
        None,
    )
    assert RedactAccessTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:1 - "WebSocket /ws/users/demo?after=0&access_token=[redacted]" [accepted]'
