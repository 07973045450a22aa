"""No secret of the chat Secret reaches a log line, whichever library logs it."""

from __future__ import annotations

import io
import logging

from wingman.chat.run import RedactSecrets

TOKEN = "7000001:AAH-secret-bot-token-value"


def test_secrets_are_redacted_in_messages_arguments_fields_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(url)s"))
    handler.addFilter(RedactSecrets([TOKEN, "short"]))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("POST https://api.telegram.org/bot%s/getUpdates failed", TOKEN,
                    extra={"url": f"https://api.telegram.org/bot{TOKEN}/sendMessage"})
        try:
            raise RuntimeError(f"connection to /bot{TOKEN}/getMe refused")
        except RuntimeError:
            log.exception("boom", extra={"url": "-"})
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert TOKEN not in text
    assert text.count("[redacted]") == 3
    assert "getUpdates failed" in text and "RuntimeError" in text
