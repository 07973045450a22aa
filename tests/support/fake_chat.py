"""Local servers that speak the Telegram Bot API and the Slack Web API, and a webhook receiver.

Telegram and Slack cannot exist here, so these stand in for them, faithfully enough that the
real client libraries (python-telegram-bot, slack_sdk) talk to them through their base-URL
options: the same paths (``/bot<token>/<method>``, ``/api/<method>``), the same request
encodings (query string, form, JSON), the same answers (``{"ok": true, "result": ...}``,
``{"ok": false, "error_code": 400, "description": "Bad Request: ..."}``; Slack's ``{"ok":
true, ...}`` / ``{"ok": false, "error": "..."}``) and the same behaviours the chat component
relies on: long-polling ``getUpdates`` with offsets, ``editMessageText`` removing the inline
keyboard when no ``reply_markup`` is sent and answering "message is not modified", Telegram's
checks of a message's text (HTML that does not parse: "can't parse entities"; more than 4096
UTF-16 code units after parsing: "message is too long"), Slack message timestamps,
``users.info`` flags for bots and guests. ``down = True`` makes a server answer 502 (an
outage); ``slow`` delays the answers to a method after it took effect (a loaded machine),
``held`` holds them until an event is set;
``glitches`` makes it answer the next requests with raw answers or a dropped connection
(transient failures); ``refuse`` (a function of the method and its parameters that answers an error
description, or None) makes it refuse single messages as the real service would. Tests drive
the users' side: ``press``/``say`` (Telegram updates) and ``slack_signed`` (Slack's signed
interactive payloads and slash commands, v0 signatures).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

_TAG = re.compile(r"<[^>]+>")
#: What Telegram's HTML parse mode accepts: tags it knows, entities, and text without < or &.
_HTML_TOKEN = re.compile(r"<(/?)([a-z-]+)(?:\s[^<>]*)?>|&(?:[a-z]+|#[0-9]+|#x[0-9a-f]+);|[<&]",
                         re.IGNORECASE)
_TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code",
                  "pre", "span", "tg-spoiler", "blockquote", "tg-emoji"}
TELEGRAM_LIMIT = 4096


def telegram_html_error(text: str) -> str | None:
    """Telegram's refusal of an HTML message text, or None when it parses."""
    stack: list[str] = []
    for m in _HTML_TOKEN.finditer(text):
        if m.group(0) in ("<", "&"):
            return (f"Bad Request: can't parse entities: unexpected {m.group(0)!r} at "
                    f"offset {m.start()}")
        if m.group(2) is None:
            continue  # an entity
        tag = m.group(2).lower()
        if tag not in _TELEGRAM_TAGS:
            return f"Bad Request: can't parse entities: unsupported start tag \"{tag}\""
        if not m.group(1):
            stack.append(tag)
        elif not stack or stack.pop() != tag:
            return f"Bad Request: can't parse entities: can't find end tag corresponding to {tag}"
    if stack:
        return f"Bad Request: can't parse entities: can't find end tag corresponding to {stack[-1]}"
    plain = html.unescape(_TAG.sub("", text))
    if not plain.strip():
        return "Bad Request: message text is empty"
    if len(plain.encode("utf-16-le")) // 2 > TELEGRAM_LIMIT:
        return "Bad Request: message is too long"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (a long poll cancelled at shutdown) is not an error


class _Base:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.down = False
        self.refuse: Callable[[str, dict[str, Any]], str | None] | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: Raw answers for the next requests, in order: (status, body), or (0, b"") to drop
        #: the connection without an answer (a reset); ``glitch_paths`` ends the paths they are
        #: for (all when empty).
        self.glitches: list[tuple[int, bytes]] = []
        self.glitch_paths: tuple[str, ...] = ()
        #: Redirects answered instead: a path (its end) -> (status, Location).
        self.redirects: dict[str, tuple[int, str]] = {}
        #: Seconds to wait before answering a method (by name), after it took effect: a slow
        #: network or a loaded machine, where the message is in the chat (and its buttons can
        #: be pressed) before its sender has the answer.
        self.slow: dict[str, float] = {}
        #: Methods (by name) whose answers wait, after they took effect, until the event is
        #: set (or 30 s): a post whose answer is held up for as long as a test needs.
        self.held: dict[str, threading.Event] = {}
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            self.lock.notify_all()

    def handle(self, method: str, path: str, params: dict[str, Any], headers: Any
               ) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                params: dict[str, Any] = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                ctype = self.headers.get("Content-Type", "")
                if raw and "json" in ctype:
                    params.update(json.loads(raw))
                elif raw:
                    params.update({k: v[0] for k, v in parse_qs(raw.decode()).items()})
                glitch = None
                with outer.lock:
                    if outer.glitches and parts.path.endswith(outer.glitch_paths or ("",)):
                        glitch = outer.glitches.pop(0)
                    redirect = next((to for end, to in outer.redirects.items()
                                     if parts.path.endswith(end)), None)
                if redirect is not None:
                    self.send_response(redirect[0])
                    self.send_header("Location", redirect[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if glitch is not None:
                    status, raw_answer = glitch
                    if status == 0:
                        self.close_connection = True
                        self.connection.shutdown(2)  # socket.SHUT_RDWR: a reset
                        return
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json" if
                                     raw_answer[:1] == b"{" else "text/html")
                    self.send_header("Content-Length", str(len(raw_answer)))
                    self.end_headers()
                    self.wfile.write(raw_answer)
                    return
                if outer.down:
                    self.send_response(502)
                    self.end_headers()
                    return
                status, body = outer.handle(self.command, parts.path, params, self.headers)
                time.sleep(outer.slow.get(parts.path.rsplit("/", 1)[-1], 0.0))
                held = outer.held.get(parts.path.rsplit("/", 1)[-1])
                if held is not None:
                    held.wait(30)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve

        return Handler


def _json_field(params: dict[str, Any], key: str) -> Any:
    value = params.get(key)
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


# --------------------------------------------------------------------------- Telegram


class FakeTelegram(_Base):
    """The Bot API for one bot token."""

    BOT: ClassVar[dict[str, Any]] = {"id": 7000001, "is_bot": True, "first_name": "Wingman",
                                     "username": "wingman_bot"}

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.updates: list[dict[str, Any]] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(100)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def _message(self, chat: int, mid: int) -> dict[str, Any]:
        m = self.messages[(chat, mid)]
        return {"message_id": mid, "date": int(time.time()), "from": self.BOT,
                "chat": {"id": chat, "type": "supergroup" if chat < 0 else "private"},
                "text": m["plain"]}

    def handle(self, method: str, path: str, params: dict[str, Any], headers: Any
               ) -> tuple[int, dict[str, Any]]:
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        name = path[len(prefix):]
        with self.lock:
            self.requests.append((name, params))
        if name == "getMe":
            return 200, {"ok": True, "result": self.BOT}
        if name == "getUpdates":
            offset = int(params.get("offset") or 0)
            timeout = min(float(params.get("timeout") or 0), 2.0)
            deadline = time.monotonic() + timeout
            with self.lock:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
                while not self.updates and time.monotonic() < deadline:
                    self.lock.wait(max(0.0, deadline - time.monotonic()))
                return 200, {"ok": True, "result": list(self.updates)}
        if name in ("sendMessage", "editMessageText"):
            chat = int(params["chat_id"])
            text = str(params["text"])
            markup = _json_field(params, "reply_markup")
            plain = html.unescape(_TAG.sub("", text)) if params.get("parse_mode") else text
            error = (telegram_html_error(text) if params.get("parse_mode") == "HTML" else None)
            if error is None and self.refuse is not None:
                error = self.refuse(name, params)
            if error is not None:
                return 400, {"ok": False, "error_code": 400, "description": error}
            with self.lock:
                if name == "sendMessage":
                    mid = next(self._ids)
                else:
                    mid = int(params["message_id"])
                    old = self.messages.get((chat, mid))
                    if old is None:
                        return 400, {"ok": False, "error_code": 400,
                                     "description": "Bad Request: message to edit not found"}
                    if old["html"] == text and old["markup"] == markup:
                        return 400, {"ok": False, "error_code": 400, "description":
                                     "Bad Request: message is not modified: specified new "
                                     "message content and reply markup are exactly the same"}
                self.messages[(chat, mid)] = {"html": text, "plain": plain, "markup": markup,
                                              "edits": (self.messages.get((chat, mid)) or {})
                                              .get("edits", -1) + 1}
                return 200, {"ok": True, "result": self._message(chat, mid)}
        if name == "answerCallbackQuery":
            if len(str(params.get("text", "")).encode("utf-16-le")) // 2 > 200:
                return 400, {"ok": False, "error_code": 400,
                             "description": "Bad Request: MESSAGE_TOO_LONG"}
            with self.lock:
                self.answers[str(params["callback_query_id"])] = params
            return 200, {"ok": True, "result": True}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    # -- the users' side -----------------------------------------------------------------
    def _push(self, update: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            update["update_id"] = next(self._update_ids)
            self.updates.append(update)
            self.lock.notify_all()
        return update

    @staticmethod
    def user(uid: int, *, bot: bool = False) -> dict[str, Any]:
        return {"id": uid, "is_bot": bot, "first_name": f"user{uid}"}

    def press(self, user: dict[str, Any], chat: int, mid: int, data: str, *,
              forwarded: bool = False, callback_id: str | None = None) -> str:
        message = self._message(chat, mid)
        if forwarded:
            message["forward_origin"] = {"type": "user", "date": int(time.time()),
                                         "sender_user": self.BOT}
        cid = callback_id or f"cb{next(self._ids)}"
        self._push({"callback_query": {"id": cid, "from": user, "chat_instance": "ci1",
                                       "message": message, "data": data}})
        return cid

    def say(self, user: dict[str, Any], chat: int, text: str, *, forwarded: bool = False,
            date: int | None = None, via_bot: bool = False) -> None:
        """A message from ``user``, sent now or at ``date`` (epoch seconds: one sent earlier
        and delivered only now, as Telegram delivers again what a restarted bot did not
        confirm); ``via_bot``: an inline bot's result the user picked (its text the bot's)."""
        message: dict[str, Any] = {
            "message_id": next(self._ids), "date": int(time.time()) if date is None else date,
            "from": user,
            "chat": {"id": chat, "type": "supergroup" if chat < 0 else "private"},
            "text": text}
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0,
                                    "length": len(text.split()[0])}]
        if forwarded:
            message["forward_origin"] = {"type": "user", "date": int(time.time()),
                                         "sender_user": user}
        if via_bot:
            message["via_bot"] = {"id": 7000099, "is_bot": True, "first_name": "Gifs",
                                  "username": "some_gif_bot"}
        self._push({"message": message})

    def sent_to(self, chat: int) -> list[dict[str, Any]]:
        with self.lock:
            return [m | {"id": mid} for (c, mid), m in self.messages.items() if c == chat]

    def buttons(self, chat: int, mid: int) -> list[str]:
        markup = self.messages[(chat, mid)]["markup"] or {}
        return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


# --------------------------------------------------------------------------- Slack


class FakeSlack(_Base):
    """The Web API for one bot token and one workspace."""

    def __init__(self, token: str, team: str, users: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.token = token
        self.team = team
        self.users = users
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemeral: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        #: what was sent to a slash command's ``response_url`` (``response_url``)
        self.responses: list[dict[str, Any]] = []
        self._ts = itertools.count(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, name: str) -> str:
        """A slash command's ``response_url``, where a later answer to it is posted."""
        return f"http://127.0.0.1:{self.port}/response/{name}"

    def handle(self, method: str, path: str, params: dict[str, Any], headers: Any
               ) -> tuple[int, dict[str, Any]]:
        if path.startswith("/response/"):  # a slash command's response_url
            with self.lock:
                self.responses.append({"url": path, **params})
            return 200, {"ok": True}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}
        name = path.removeprefix("/api/")
        with self.lock:
            self.requests.append((name, params))
            error = self.refuse(name, params) if self.refuse is not None else None
            if error is not None:
                return 200, {"ok": False, "error": error}
            if name == "chat.postMessage":
                ts = f"{int(time.time())}.{next(self._ts):06d}"
                channel = str(params["channel"])
                self.messages[(channel, ts)] = {"text": params.get("text"), "edits": 0,
                                                "blocks": _json_field(params, "blocks")}
                return 200, {"ok": True, "channel": channel, "ts": ts,
                             "message": {"ts": ts, "text": params.get("text")}}
            if name == "chat.update":
                key = (str(params["channel"]), str(params["ts"]))
                if key not in self.messages:
                    return 200, {"ok": False, "error": "message_not_found"}
                self.messages[key] = {"text": params.get("text"),
                                      "blocks": _json_field(params, "blocks"),
                                      "edits": self.messages[key]["edits"] + 1}
                return 200, {"ok": True, "channel": key[0], "ts": key[1]}
            if name == "chat.getPermalink":
                key = (str(params.get("channel")), str(params.get("message_ts")))
                if key not in self.messages:
                    return 200, {"ok": False, "error": "message_not_found"}
                return 200, {"ok": True, "channel": key[0], "permalink": (
                    f"https://wingman-test.slack.com/archives/{key[0]}/"
                    f"p{key[1].replace('.', '')}")}
            if name == "chat.postEphemeral":
                self.ephemeral.append({"channel": params["channel"], "user": params["user"],
                                       "blocks": _json_field(params, "blocks")})
                return 200, {"ok": True, "message_ts": f"{int(time.time())}.000001"}
            if name == "views.open":
                view = _json_field(params, "view")
                self.views.append({"trigger_id": params["trigger_id"], "view": view})
                return 200, {"ok": True, "view": {"id": f"V{len(self.views)}", **view}}
            if name == "auth.test":
                return 200, {"ok": True, "team_id": self.team, "user_id": "U0WINGMAN",
                             "bot_id": "B0WINGMAN"}
            if name == "users.info":
                user = self.users.get(str(params.get("user")))
                if user is None:
                    return 200, {"ok": False, "error": "user_not_found"}
                return 200, {"ok": True, "user": {"id": params["user"], "team_id": self.team,
                                                  **user}}
        return 200, {"ok": False, "error": "unknown_method"}

    def cards(self, channel: str) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(ts, m) for (c, ts), m in self.messages.items() if c == channel]


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_signed(url: str, secret: str, form: dict[str, str], *, timestamp: int | None = None,
                 signature: str | None = None) -> tuple[int, str, dict[str, str]]:
    """POST ``form`` as Slack does (form-encoded, v0-signed); (status, body, headers sent)."""
    body = urlencode(form).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Slack-Request-Timestamp": ts,
               "X-Slack-Signature": signature or slack_signature(secret, ts, body)}
    return (*post(url, body, headers), headers)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, headers=headers,  # noqa: S310 - local
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - local test server
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --------------------------------------------------------------------------- webhook


class WebhookReceiver(_Base):
    """Accepts the chat component's webhook deliveries (or fails them while ``down``)."""

    def __init__(self) -> None:
        super().__init__()
        self.deliveries: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def handle(self, method: str, path: str, params: dict[str, Any], headers: Any
               ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.deliveries.append({"headers": dict(headers), "body": params})
        return 200, {}


_Served = TypeVar("_Served", bound="_Base")


@contextmanager
def serving(server: _Served) -> Iterator[_Served]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


__all__ = ["FakeSlack", "FakeTelegram", "WebhookReceiver", "post", "serving",
           "slack_signature", "slack_signed", "telegram_html_error"]
