"""The generic webhook channel: every change as a signed JSON POST, retried with backoff.

Each delivery is ``POST <chat.webhook.url>`` with a JSON body (``event``: ``request.created``,
``request.updated``, ``request.expiring``, ``request.<final state>``, ``grant.<final phase>``;
``environment``; ``request``: the whole view; ``live``: whether it can still be decided;
``text`` for notices) and the headers ``X-Wingman-Event``, ``X-Wingman-Delivery`` (stable per
event and content, for de-duplication), ``X-Wingman-Timestamp`` (Unix seconds) and
``X-Wingman-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the Secret's
webhook-secret>``. Receivers verify the signature and reject timestamps older than five
minutes. Any answer but 2xx is a failure: the service retries with exponential backoff (a 429
or 503 ``Retry-After`` is honoured, up to five minutes) and never drops an event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from wingman.chat import render
from wingman.chat.render import Notice, RequestView
from wingman.chat.service import ChannelError
from wingman.settings import WebhookConfig


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class WebhookChannel:
    name = "webhook"

    def __init__(self, config: WebhookConfig, secret: str) -> None:
        self.config = config
        self._secret = secret
        self.client = httpx.AsyncClient(timeout=config.timeout_seconds)

    async def _send(self, v: RequestView, event: str, text: str = "") -> None:
        body = json.dumps(render.webhook_body(v, event, text), sort_keys=True,
                          ensure_ascii=False).encode()
        delivery = hashlib.sha256(f"{v.uid}\0{event}\0{v.fingerprint()}\0{text}".encode()
                                  ).hexdigest()[:32]
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Wingman-Event": event,
                   "X-Wingman-Delivery": delivery, "X-Wingman-Timestamp": ts,
                   "X-Wingman-Signature": signature(self._secret, ts, body),
                   "User-Agent": "wingman-chat"}
        try:
            resp = await self.client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ChannelError(f"webhook POST failed: {type(exc).__name__}") from None
        if resp.status_code // 100 != 2:
            retry = resp.headers.get("Retry-After", "")
            raise ChannelError(f"webhook answered {resp.status_code}",
                               retry_after=float(retry) if retry.isascii() and retry.isdigit()
                               else None)

    async def post_card(self, v: RequestView) -> dict[str, Any]:
        await self._send(v, "request.created")
        return {"webhook": True}

    async def update_card(self, ref: dict[str, Any], v: RequestView) -> None:
        await self._send(v, "request.updated")

    async def notify(self, v: RequestView, notice: Notice) -> None:
        await self._send(v, notice.event, notice.text)

    async def close(self) -> None:
        await self.client.aclose()


__all__ = ["WebhookChannel", "signature"]
