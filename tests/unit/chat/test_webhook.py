"""The webhook channel against a receiver that answers whatever it likes: a failed delivery
is a ChannelError the service backs off from, never an exception that stops the service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from wingman.chat.webhook import WebhookChannel
from wingman.settings import WebhookConfig

from .world import metric, request, service


@pytest.mark.parametrize(("retry_after", "backoff"), [(b"\xb2", None), (b"7", 7.0),
                                                      (b"9" * 400, 300.0)])
def test_a_retry_after_that_is_not_a_number_is_a_failed_delivery(
        tmp_path: Path, retry_after: bytes, backoff: float | None) -> None:
    # "\xb2" is the superscript two: str.isdigit says yes, float says no; 400 nines (float
    # says infinity) wait the longest backoff, not forever
    async def main() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + retry_after
                         + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        receiver = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = receiver.sockets[0].getsockname()[1]
        svc = service(tmp_path, request("hooked", 1))
        channel = WebhookChannel(WebhookConfig(url=f"http://127.0.0.1:{port}/hook"),
                                 "webhook-unit-test-secret")
        svc.channels = [channel]
        try:
            await svc.sync()  # must not raise: the reconciler goes on with its next sync
        finally:
            await channel.close()
            receiver.close()
        assert metric(svc, "wingman_chat_messages_failed_total", channel="webhook") == 1
        assert metric(svc, "wingman_chat_backlog", channel="webhook") == 1
        delay = svc._health["webhook"].next_try - time.monotonic()
        assert delay == pytest.approx(backoff or 1.0, abs=0.5)

    asyncio.run(main())
