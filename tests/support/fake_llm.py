"""A local stand-in for hosted LLM APIs, speaking their real wire formats over HTTP.

One threaded HTTP server on 127.0.0.1 answers both:

- OpenAI chat completions: ``POST /v1/chat/completions`` (base URL ``{url}/v1``), credential in
  ``Authorization: Bearer <key>``, answer in ``choices[0].message.content``;
- Anthropic Messages: ``POST /v1/messages`` (base URL ``{url}``), credential in ``x-api-key``
  (``Authorization: Bearer`` as current SDKs send it), ``anthropic-version`` required, answer in
  ``content[0].text``;

each with the provider's error body for 4xx/5xx. The real ``openai`` and ``anthropic`` clients
talk to it. The server checks, as a provider would not but a reviewer's caller must, that the
request data sits between Wingman's data delimiters, and records every request for the test.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from wingman.review.llm import DATA_BEGIN, DATA_END

API_KEY = "sk-test-0123456789abcdef"
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclass
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    system: str = ""
    user: str = ""
    data: Any = None  # the JSON between the delimiters, parsed


@dataclass
class FakeLLM:
    """What the server answers; set the fields before a review."""

    url: str = ""
    answer: str = '{"verdict": "approve", "risk": "low", "rationale": "ok", "flags": []}'
    status: int = 200
    delay: float = 0.0
    finish: str = ""  # "" = the provider's normal stop reason
    redirect: str = ""  # a URL: answer 307 with Location {redirect}{path}, as a hostile proxy
    pad: int = 0  # bytes of filler in a JSON field the SDKs ignore, to make the body large
    gzip: bool = False  # send the body gzip-compressed (Content-Encoding: gzip) regardless
    lengthless: bool = False  # no Content-Length: the body ends when the connection closes
    trickle: float = 0.0  # seconds between the body's bytes, sent one at a time
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_url(self) -> str:
        return self.url


def _error_body(path: str, status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error",
            429: "rate_limit_error"}.get(status, "api_error")
    if path == ANTHROPIC_PATH:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _split(path: str, body: dict[str, Any]) -> tuple[str, str]:
    """(system prompt, user message) in either wire format."""
    messages = body.get("messages") or []
    if path == ANTHROPIC_PATH:
        system = body.get("system", "")
        users = [m["content"] for m in messages if m.get("role") == "user"]
    else:
        system = "".join(m["content"] for m in messages if m.get("role") == "system")
        users = [m["content"] for m in messages if m.get("role") == "user"]
    return str(system), str(users[0]) if len(users) == 1 else ""


def _handler(fake: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            if fake.pad and status == 200:
                payload = {**payload, "padding": "x" * fake.pad}
            raw = json.dumps(payload).encode()
            if fake.gzip:
                raw = gzip.compress(raw)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if fake.gzip:
                    self.send_header("Content-Encoding", "gzip")
                if fake.lengthless:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(raw)))
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                if fake.trickle:
                    for i in range(len(raw)):
                        if fake._stop.wait(fake.trickle):
                            return
                        self.wfile.write(raw[i:i + 1])
                        self.wfile.flush()
                    return
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer

        def do_POST(self) -> None:
            path = self.path
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.loads(raw or b"{}")
            system, user = _split(path, body)
            rec = Recorded(path, {k.lower(): v for k, v in self.headers.items()}, body,
                           system, user)
            with fake._lock:
                fake.requests.append(rec)
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            try:
                self._answer(path, rec)
            finally:
                with fake._lock:
                    fake.in_flight -= 1

        def _answer(self, path: str, rec: Recorded) -> None:
            if fake.redirect:
                try:
                    self.send_response(307)
                    self.send_header("Location", fake.redirect + path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if path not in (OPENAI_PATH, ANTHROPIC_PATH):
                self._send(404, _error_body(path, 404, f"no route {path}"))
                return
            if path == OPENAI_PATH:
                authorized = rec.headers.get("authorization") == f"Bearer {API_KEY}"
            else:
                # Older SDKs send the key as x-api-key, current ones as a bearer token.
                authorized = API_KEY in (rec.headers.get("x-api-key"),
                                         rec.headers.get("authorization", "")[len("Bearer "):])
                if not rec.headers.get("anthropic-version"):
                    self._send(400, _error_body(path, 400, "anthropic-version header missing"))
                    return
            if not authorized:
                self._send(401, _error_body(path, 401, "invalid x-api-key / bearer token"))
                return
            # The request data must be exactly one JSON document between the delimiters.
            if rec.user.count(DATA_BEGIN) != 1 or rec.user.count(DATA_END) != 1:
                self._send(400, _error_body(path, 400, "request data is not delimited"))
                return
            inner = rec.user.split(DATA_BEGIN, 1)[1].split(DATA_END, 1)[0]
            rec.data = json.loads(inner)
            if fake.delay:
                fake._stop.wait(fake.delay)
            if fake.status != 200:
                self._send(fake.status, _error_body(path, fake.status, "simulated failure"))
                return
            model = rec.body.get("model", "")
            if path == OPENAI_PATH:
                self._send(200, {
                    "id": "chatcmpl-fake", "object": "chat.completion",
                    "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "finish_reason": fake.finish or "stop",
                                 "logprobs": None,
                                 "message": {"role": "assistant", "content": fake.answer,
                                             "refusal": None}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10,
                              "total_tokens": 20},
                })
            else:
                self._send(200, {
                    "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": fake.answer}],
                    "stop_reason": fake.finish or "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 10},
                })

    return Handler


@contextmanager
def fake_llm() -> Iterator[FakeLLM]:
    """Run the fake provider on an ephemeral loopback port for the duration of the block."""
    fake = FakeLLM()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    # shutdown() waits for serve_forever to look at its flag, once a poll_interval: one
    # server a test, at 0.05 s that wait was a fifth of tests/unit/review/test_llm.py's time
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.005},
                              name="fake-llm", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    fake.url = f"http://{host!s}:{port}"
    try:
        yield fake
    finally:
        fake._stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
