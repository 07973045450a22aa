"""No secret of the chat Secret reaches a log line, whichever library logs it; /healthz fails
once a loop of the process has ended; the HTTP server cuts off clients that send their
headers slowly."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import pytest
from aiohttp import ClientSession, web

from wingman.chat.run import RedactSecrets, health, http_runner

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


def test_a_chat_librarys_record_never_shows_what_it_received() -> None:
    """python-telegram-bot logs a batch of updates it cannot read whole: the chat messages in
    it (a step-up code) must not reach the log; its own words still do."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets([]))
    lib = logging.getLogger("telegram.Bot")
    lib.addHandler(handler)
    try:
        lib.critical("Error while parsing updates! Received data was %r (%d%%)",
                     [{"update_id": 7, "message": {"text": "/confirm 493817"}}], 50)
        logging.getLogger("wingman.chat.test").addHandler(handler)
        logging.getLogger("wingman.chat.test").warning("ours keeps its %s", "arguments")
    finally:
        lib.removeHandler(handler)
        logging.getLogger("wingman.chat.test").removeHandler(handler)
    text = stream.getvalue()
    assert "493817" not in text and "/confirm" not in text
    assert "Received data was <withheld> (<withheld>%)" in text
    assert "ours keeps its arguments" in text


def test_healthz_fails_naming_a_loop_that_ended() -> None:
    async def main() -> tuple[int, str, int, str]:
        forever = asyncio.create_task(asyncio.Event().wait(), name="reconciler")
        ok = await health([forever])
        ended = asyncio.create_task(asyncio.sleep(0), name="telegram polling")
        await ended
        bad = await health([forever, ended])
        forever.cancel()
        return ok.status, str(ok.text), bad.status, str(bad.text)

    ok_status, ok_text, bad_status, bad_text = asyncio.run(main())
    assert (ok_status, ok_text) == (200, "ok")
    assert bad_status == 503 and bad_text == "not running: telegram polling"


async def _serve(app: web.Application, idle_seconds: float) -> tuple[web.AppRunner, int]:
    runner = http_runner(app, idle_seconds)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.mark.parametrize("opening, drip", [
    (b"", b""),
    (b"POST /slack/commands?pad=", b"a"),
    (b"POST /slack/commands HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"a"),
], ids=["nothing", "request-line-trickled", "headers-trickled"])
def test_a_client_that_sends_its_headers_slowly_is_cut_off(
        opening: bytes, drip: bytes) -> None:
    """Anyone can reach the Slack endpoints: a client that opens connections and sends the
    headers a byte at a time (or nothing) must not hold them for good (slowloris); a request
    sent at once is answered as always."""

    async def main() -> tuple[float, bytes, int]:
        app = web.Application()
        async def healthz(_request: web.Request) -> web.Response:
            return await health([])

        app.router.add_get("/healthz", healthz)
        runner, port = await _serve(app, 1.0)  # chat.httpIdleTimeoutSeconds
        try:
            async with ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    status = resp.status
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(opening)
            got = b""
            try:
                for _ in range(40):  # a byte every 0.1 s: 4 s, were it not cut off
                    writer.write(drip)
                    await writer.drain()
                    try:
                        got = await asyncio.wait_for(reader.read(1024), 0.1)
                    except TimeoutError:
                        continue
                    break
            except ConnectionError:
                got = b""
            elapsed = time.monotonic() - started
            writer.close()
            return elapsed, got, status
        finally:
            await runner.cleanup()

    elapsed, got, status = asyncio.run(main())
    assert status == 200
    assert got == b"" and elapsed < 3.0, (elapsed, got)

