"""One log format for every component: the same JSON keys from our loggers and the framework's,
a configurable level, and secrets a process holds scrubbed from every line."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wingman import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_the_common_keys_first_and_extras_after(stream: io.StringIO) -> None:
    logs.setup_logging("json", "info", component="operator", stream=stream)
    logging.getLogger("wingman.operator.grants").warning(
        "grant denied", extra={"grant": "g1", "reason": "TTLAboveCap"})
    (line,) = lines(stream)
    assert list(line)[:5] == ["time", "level", "component", "logger", "message"]
    assert line["level"] == "warning" and line["component"] == "operator"
    assert line["logger"] == "wingman.operator.grants" and line["message"] == "grant denied"
    assert (line["grant"], line["reason"]) == ("g1", "TTLAboveCap")
    assert line["time"].endswith("Z") and len(line["time"]) == len("2026-11-25T12:00:00.000Z")


def test_the_frameworks_object_records_come_out_in_the_same_format(
        stream: io.StringIO) -> None:
    """kopf logs per object through a LoggerAdapter that adds ``k8s_ref``; it becomes
    ``object`` and the framework's private attributes stay out."""
    import kopf

    logs.setup_logging("json", "debug", component="operator", stream=stream)
    body = kopf.Body({"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                      "metadata": {"name": "g1", "namespace": "wm", "uid": "u1"}})
    logger = kopf.ObjectLogger(body=body, settings=kopf.OperatorSettings())
    logger.info("Handler 'grant_created' succeeded.")
    (line,) = lines(stream)
    assert line["logger"] == "kopf.objects" and line["component"] == "operator"
    assert line["object"] == {"kind": "ExecutionGrant", "namespace": "wm", "name": "g1",
                              "uid": "u1"}
    assert not {"k8s_ref", "k8s_skip", "settings"} & set(line)


def test_the_level_filters_and_the_framework_stays_quiet_at_info(stream: io.StringIO) -> None:
    logs.setup_logging("json", "warning", component="gateway", stream=stream)
    logging.getLogger("wingman.gateway").info("not shown")
    logging.getLogger("wingman.gateway").error("shown")
    logs.setup_logging("json", "info", component="gateway", stream=stream)
    logging.getLogger("kopf.objects").info("a handler succeeded")  # noise at scale
    logging.getLogger("wingman.gateway").info("shown too")
    assert [line["message"] for line in lines(stream)] == ["shown", "shown too"]


def test_a_second_setup_replaces_the_handler(stream: io.StringIO) -> None:
    logs.setup_logging("json", "info", component="cli", stream=stream)
    logs.setup_logging("json", "info", component="cli", stream=stream)
    logging.getLogger("wingman").info("once")
    assert len(lines(stream)) == 1


def test_text_is_one_readable_line(stream: io.StringIO) -> None:
    logs.setup_logging("text", "info", component="cli", stream=stream)
    logging.getLogger("wingman.cli").info("request created", extra={"request": "r1"})
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert " INFO    cli wingman.cli request created request=r1" in text


# what a request's text, an approver's name or an error can carry into a message: a line break
# (also Unicode's), a terminal escape, whether 7-bit or C1, and a forged record after it
_FORGED = ('refused by alice\n2026-11-25T12:00:00.000Z INFO    gateway wingman.gateway '
           'GatewayExecuted\r\u2028{"level": "info", "message": "ok"}\u2029\x85\x1b[2J\x9b2J\x7f')


def test_a_text_record_stays_one_line_whatever_its_message_holds(stream: io.StringIO) -> None:
    logs.setup_logging("text", "info", component="gateway", stream=stream)
    logging.getLogger("wingman.gateway").warning(_FORGED, extra={"reason": "a\nb"})
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.splitlines() == [text.rstrip("\n")], text
    assert not any(c in text for c in "\r\x1b\x9b\x85\x7f\u2028\u2029"), text
    assert "refused by alice\\n2026-11-25T12:00:00.000Z INFO" in text
    assert "reason=a\\nb" in text


_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_bidirectional_controls_are_shown_escaped_not_applied(stream: io.StringIO,
                                                              fmt: str) -> None:
    # "approved by \u202emallory" shows as "approved by yrollam" reversed: a name read backwards
    logs.setup_logging(fmt, "info", component="chat", stream=stream)
    logging.getLogger("wingman.chat").info(f"approved by {_BIDI}mallory",
                                           extra={"approver": "\u202eeve"})
    text = stream.getvalue()
    assert not any(c in text for c in _BIDI), ascii(text)
    assert "\\u202E" in text and "mallory" in text, text
    if fmt == "json":
        (line,) = lines(stream)
        assert line["message"] == f"approved by {_BIDI}mallory"  # escaped, not lost
        assert line["approver"] == "\u202eeve"


def test_a_text_traceback_cannot_forge_a_record(stream: io.StringIO) -> None:
    logs.setup_logging("text", "info", component="gateway", stream=stream)
    try:
        raise RuntimeError(_FORGED)
    except RuntimeError:
        logging.getLogger("wingman.gateway").exception("the command failed")
    first, *rest = stream.getvalue().splitlines()
    assert "the command failed" in first and "Traceback" not in first
    assert rest and all(line.startswith("\t") for line in rest), rest  # never a record's start
    assert "\tRuntimeError: refused by alice" in rest, rest  # the message's lines, indented too
    assert any(line.startswith("\t2026-11-25T12:00:00.000Z INFO") for line in rest), rest
    assert not any(c in stream.getvalue() for c in "\r\x1b\x9b\x85\x7f\u2028\u2029")


def test_a_json_record_holds_no_raw_line_break_or_control_character(
        stream: io.StringIO) -> None:
    logs.setup_logging("json", "info", component="gateway", stream=stream)
    logging.getLogger("wingman.gateway").warning(_FORGED, extra={"reason": "a\u2028b"})
    text = stream.getvalue()
    assert text.splitlines() == [text.rstrip("\n")], text  # also for str.splitlines' breaks
    assert not any(c in text for c in "\r\x1b\x9b\x85\x7f\u2028\u2029"), text
    (line,) = lines(stream)
    assert (line["message"], line["reason"]) == (_FORGED, "a\u2028b")  # escaped, not lost


@pytest.mark.parametrize("escape", ["\x1e", "\x0b", "\n", "\t", "\x00", "\\", '"', "\\\x1e"])
def test_a_json_record_stays_one_object_when_a_token_follows_one_of_json_s_escapes(
        stream: io.StringIO, escape: str) -> None:
    # json.dumps writes the character as ``\u001e`` (``\n``, ...): the scrubber read the
    # escape's letters and the text after them as one run, and redacted from inside the escape
    # (``\[REDACTED]``, no JSON). ``\u001e`` then the token without its first letter spells
    # the token in the line: redacted, the escape with it.
    logs.setup_logging("json", "info", component="gateway", stream=stream)
    token = _jwt()
    texts = {"cut": "x" + escape + token[1:], "whole": "x" + escape + token,
             "both": "a" + escape + token[1:] + " and " + token}
    logging.getLogger("wingman.gateway").info("%s", texts["cut"], extra=texts)
    (line,) = lines(stream)  # one valid JSON object
    assert token not in stream.getvalue()
    assert line["whole"] in ("x" + escape + logs.REDACTED, "x" + logs.REDACTED)
    assert line["both"].endswith(" and " + logs.REDACTED) and line["both"].startswith("a")
    assert line["message"] == line["cut"] and line["cut"].startswith("x")


#: Every character a log line writes escaped, in either format.
_ESCAPED = {"json": logs._JSON_UNSAFE.findall("".join(map(chr, range(0x10000)))),
            "text": logs._TEXT_UNSAFE.findall("".join(map(chr, range(0x10000))))}


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_an_escape_written_after_scrubbing_never_spells_a_token(stream: io.StringIO,
                                                                  fmt: str) -> None:
    # the line is scrubbed, then what would act on a terminal is escaped: an escape ending in
    # ``e`` (``\u202e``, ``\x1e``) then a token without its first letter spelled the token
    logs.setup_logging(fmt, "info", component="gateway", stream=stream)
    token = _jwt()
    for char in _ESCAPED[fmt]:
        for rest in (token[1:], token[2:]):
            try:
                raise RuntimeError(f"{char}{rest}")
            except RuntimeError:
                logging.getLogger("wingman.gateway").exception("token %s%s", char, rest)
    assert len(_ESCAPED[fmt]) > 40
    text = stream.getvalue()
    assert token not in text and not logs.looks_like_token(text.replace(logs.REDACTED, " "))


#: Text whose JSON form hides a token from the line's scrubber: json.dumps doubles a
#: backslash (a wrap written ``\\\\n`` is no break in the line) and writes a NUL as
#: ``\\u0000`` (UTF-16 read a byte a character); read back, each string holds the token.
_HIDDEN_BY_JSON_ESCAPES: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("utf-16-le", lambda t: t.encode("utf-16-le").decode("latin-1")),
    ("utf-16-be-with-bom", lambda t: ("\ufeff" + t).encode("utf-16-be").decode("latin-1")),
    ("wrapped-escaped-twice", lambda t: _wrapped(t, 20, "\\\\n")),
    ("wrapped-escaped-twice-crlf", lambda t: _wrapped(t, 15, "\\\\r\\\\n")),
    ("base64-wrapped-escaped", lambda t: _wrapped(base64.b64encode(t.encode()).decode(), 30,
                                                  "\\n")),
)


@pytest.mark.parametrize("hide", [row[1] for row in _HIDDEN_BY_JSON_ESCAPES],
                         ids=[row[0] for row in _HIDDEN_BY_JSON_ESCAPES])
def test_a_json_record_read_back_holds_no_token_its_escapes_hid(
        stream: io.StringIO, hide: Callable[[str], str]) -> None:
    logs.setup_logging("json", "info", component="gateway", stream=stream)
    hidden = hide(_jwt())
    assert logs.looks_like_token(hidden)
    logging.getLogger("wingman.gateway").info("out %s", hidden,
                                              extra={"output": hidden, hidden: "key"})
    (line,) = lines(stream)
    assert not any(logs.looks_like_token(text) for text in (*line, *map(str, line.values())))
    assert line["message"].startswith(("out ", logs.REDACTED)) and line["level"] == "info"


def test_a_json_record_a_redaction_cut_otherwise_is_scrubbed_string_by_string(
        stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    # a cut the escape rule does not mend (none is known): each string scrubbed on its own
    monkeypatch.setattr(logs, "_CUT_ESCAPE", re.compile(r"(?!)"))
    logs.setup_logging("json", "info", component="gateway", stream=stream)
    token = _jwt()
    logging.getLogger("wingman.gateway").info("x\x1e%s", token[1:],
                                              extra={"whole": f"Bearer {token}"})
    (line,) = lines(stream)
    assert line["message"] == logs.REDACTED  # its JSON form spells the token: all of it
    assert line["whole"] == "Bearer " + logs.REDACTED and token not in stream.getvalue()


def test_a_registered_secret_never_reaches_a_line(stream: io.StringIO) -> None:
    token = "eyJhbGciOiJFZERTQSJ9.payload.signature"
    logs.setup_logging("json", "info", component="gateway", stream=stream)
    logs.never_log(token)
    try:
        logging.getLogger("wingman.gateway").error("refused %s", token,
                                                    extra={"detail": f"Bearer {token}"})
        try:
            raise ValueError(token)
        except ValueError:
            logging.getLogger("wingman.gateway").exception("boom")
    finally:
        logs.forget(token)
    assert token not in stream.getvalue()
    assert stream.getvalue().count(logs.REDACTED) >= 3


def _jwt() -> str:
    """A real capability token's shape: three base64url segments, the first ``eyJ``."""
    header = base64.urlsafe_b64encode(b'{"alg":"EdDSA","typ":"JWT"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(b'{"sub":"worker","jti":"0123456789abcdef"}'
                                      ).rstrip(b"=").decode()
    return f"{header}.{claims}.{'s' * 86}"


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_a_token_nobody_registered_is_scrubbed_by_its_shape(stream: io.StringIO,
                                                            fmt: str) -> None:
    """An API server's error that echoes a Secret (its ``data`` in base64), or a JWT inside a
    path or a header: no line carries it, whoever logged it, and the words around it stay."""
    token = _jwt()
    encoded = base64.b64encode(token.encode()).decode()
    logs.setup_logging(fmt, "info", component="operator", stream=stream)
    log = logging.getLogger("wingman.operator.grants")
    log.warning('Secret "g-token" is invalid: data[token]: %s', encoded,
                extra={"detail": f"Authorization: Bearer {token}"})
    log.warning("GET /api/v1/x/%s failed", token)
    try:
        raise ValueError(f"refused: {encoded.rstrip('=')}")
    except ValueError:
        log.exception("boom")
    out = stream.getvalue()
    assert token not in out and encoded.rstrip("=") not in out
    for fragment in (token.split(".")[0], token.split(".")[1], encoded[:40]):
        assert fragment not in out
    assert "Authorization: Bearer [REDACTED]" in out
    assert "g-token" in out and "data[token]: [REDACTED]" in out
    assert "GET [REDACTED] failed" in out  # the path holding it goes with it
    assert "refused: [REDACTED]" in out


@pytest.mark.parametrize("before", ["", "B", "Be", "Bearer ", '{"token":"',
                                    "users:\n- user:\n    token: "])
def test_a_token_inside_encoded_text_is_scrubbed_at_any_offset(stream: io.StringIO,
                                                               before: str) -> None:
    """base64 of a kubeconfig, of ``Bearer <token>`` or of JSON holding a token: the token may
    start at any of the three offsets of a base64 group."""
    token = _jwt()
    encoded = base64.b64encode(f"{before}{token}\n".encode()).decode()
    logs.setup_logging("json", "info", component="operator", stream=stream)
    logging.getLogger("wingman.operator").warning("refused data %s", encoded)
    assert lines(stream)[0]["message"] == f"refused data {logs.REDACTED}" + \
        "=" * encoded.count("=")


def test_words_and_hashes_that_only_resemble_a_token_are_kept(stream: io.StringIO) -> None:
    logs.setup_logging("json", "info", component="operator", stream=stream)
    text = ("eyJ alone, eyJ.x without a third part, ZXlK short, sha256:" + "ab" * 32
            + " ns/eyJob.done")
    logging.getLogger("wingman.operator").info(text)
    assert lines(stream)[0]["message"] == text


def test_redacting_tokens_replaces_only_what_the_audit_trail_refuses() -> None:
    """``redact_tokens`` (a refusal quoting a name typed as a token) keeps the words around a
    token and leaves nothing ``looks_like_token`` finds, plain or base64-encoded."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJl"
    encoded = base64.b64encode(f"Bearer {jwt}".encode()).decode()
    text = f"no request 'web-{jwt}' nor {encoded} here"
    redacted = logs.redact_tokens(text)
    assert redacted == "no request '[REDACTED]' nor [REDACTED]= here"
    assert not logs.looks_like_token(redacted)
    # wrapped, it goes from its eyJ on, and the words a line break joins before it stay
    wrapped = _wrapped(jwt, 20, "\n")
    assert logs.redact_tokens(f"use\n{wrapped}\n\nthen") == f"use\n{logs.REDACTED}\n\nthen"
    kept = "eyJ alone, eyJ.x without a third part, ZXlK short, ns/eyJob.done"
    assert logs.redact_tokens(kept) == kept

def test_scrubbing_a_hostile_line_takes_linear_time(stream: io.StringIO) -> None:
    """A line of ``eyJ`` repeated (a request's text, say) is scrubbed in one pass, not one
    per occurrence."""
    logs.setup_logging("json", "info", component="operator", stream=stream)
    hostile = "eyJ" * 200_000 + ".a"
    started = time.process_time()
    logging.getLogger("wingman.operator").info(hostile)
    assert time.process_time() - started < 5.0
    assert "eyJeyJ" in stream.getvalue()  # no token: two segments only


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "verbose")])
def test_bad_format_or_level_is_refused(fmt: str, level: str) -> None:
    with pytest.raises(ValueError, match="is not one of"):
        logs.setup_logging(fmt, level, component="cli")


def test_the_logs_module_does_not_need_the_operator_framework() -> None:
    """The gateway and the command line log without importing kopf."""
    code = ("import sys, wingman.logs as l; l.setup_logging('json', 'info', component='x'); "
            "sys.exit(1 if 'kopf' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


_THREAD_CRASH = """
import threading
from wingman.logs import install_excepthook

install_excepthook("gateway")
def work():
    raise ValueError("forged\\n{\\"level\\": \\"info\\"}")
worker = threading.Thread(target=work, name="worker")
worker.start()
worker.join()
print("the process went on")
"""


def test_a_threads_uncaught_error_is_one_record_naming_the_thread() -> None:
    """A thread's error nothing caught does not stop the process; its record says whose it
    was, in the log format, its message escaped."""
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _THREAD_CRASH], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(Path(logs.__file__).resolve().parents[1]),
                               "WINGMAN_LOG_FORMAT": "json"})
    assert (done.returncode, done.stdout) == (0, "the process went on\n"), done
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert record["event"] == "UncaughtException" and record["component"] == "gateway"
    assert record["message"].startswith("thread worker stopped on an error nothing handled")
    assert 'ValueError: forged\n{"level": "info"}' in record["message"]


_IGNORED_ERROR = """
import gc
from wingman.logs import install_excepthook

install_excepthook("mcp")
class Closing:
    def __del__(self):
        raise ValueError("forged\\n{\\"level\\": \\"info\\"}")
Closing()
gc.collect()
print("the process went on")
"""


def test_an_error_python_can_only_ignore_is_one_record_not_its_own_lines() -> None:
    """An error in a ``__del__`` (or a generator's, a coroutine's finalization: the web
    server's and the SDK's tasks at a disconnect) is one record in the log format, its message
    escaped, not Python's "Exception ignored in" and a traceback on stderr as they are; the
    process goes on."""
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _IGNORED_ERROR], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(Path(logs.__file__).resolve().parents[1]),
                               "WINGMAN_LOG_FORMAT": "json"})
    assert (done.returncode, done.stdout) == (0, "the process went on\n"), done
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert (record["event"], record["level"], record["component"]) == (
        "UnraisableException", "warning", "mcp"), record
    assert record["message"].startswith("Exception ignored in")
    assert 'ValueError: forged\n{"level": "info"}' in record["message"]
    assert "Traceback" in record["error"] and "__del__" in record["error"]


_UNSAYABLE_CRASH = """
from wingman.logs import install_excepthook

install_excepthook("cli")

class Unsayable(Exception):
    def __str__(self) -> str:
        raise ValueError("no message")

def where_it_failed() -> None:
    raise Unsayable

where_it_failed()
"""


def test_an_uncaught_error_whose_message_fails_is_still_one_record_with_its_traceback() -> None:
    """An exception whose ``str()`` itself raises must not lose the crash: the record names
    the type and carries the traceback (where it failed), as Python's own hook would."""
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _UNSAYABLE_CRASH], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(Path(logs.__file__).resolve().parents[1]),
                               "WINGMAN_LOG_FORMAT": "json"})
    assert done.returncode == 1, done
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    assert record["event"] == "UncaughtException", record
    assert "Unsayable: <exception str() failed>" in record["message"]
    assert "where_it_failed" in record["error"]


_CUT_CRASH = """
import sys
from wingman.logs import CRASH_MESSAGE_MAX, install_excepthook, never_log

install_excepthook("gateway")
secret, token, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
never_log(secret)
what = secret if sys.argv[4] == "registered" else token
raise RuntimeError("x" * (CRASH_MESSAGE_MAX - 1 - at) + " " + what + " and more after it" * 9)
"""


@pytest.mark.parametrize("kind", ["registered", "jwt"])
@pytest.mark.parametrize("inside", [4, 12, 40])
def test_an_uncaught_errors_message_is_scrubbed_before_it_is_cut(kind: str, inside: int) -> None:
    """A secret the length cut falls inside is scrubbed whole, never left half visible: cut
    first, its first characters were no longer a token the scrubber recognised."""
    from pathlib import Path

    secret = "k3y-" + "Zq9" * 20
    token = _jwt()
    done = subprocess.run([sys.executable, "-c", _CUT_CRASH, secret, token, str(inside), kind],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PYTHONPATH": str(Path(logs.__file__).resolve().parents[1]),
                               "WINGMAN_LOG_FORMAT": "json"})
    assert done.returncode == 1, done
    (line,) = done.stderr.splitlines()
    record = json.loads(line)
    shown = secret if kind == "registered" else token
    message = record["message"]
    # the cut falls `inside` characters into the secret
    assert message.startswith("the process stopped on an error nothing handled: RuntimeError: ")
    for n in (4, 8):
        assert shown[:n] not in message, message[-80:]
    assert message.endswith("…"), message[-80:]
    assert shown not in record["error"] and logs.REDACTED in record["error"]


def _cut_shapes() -> dict[str, str]:
    """Every shape of secret the scrubber knows, as it may sit in an exception's message."""
    jwt = _jwt()
    return {
        "registered": "p@ss:w0rd!" + "Zq9" * 12,  # never_log: not token-shaped, any characters
        "jwt": jwt,
        "jwt-in-a-path": "/var/run/secrets/" + jwt,
        "base64-of-a-jwt": base64.b64encode(jwt.encode()).decode(),
        "base64-of-bearer-jwt": base64.b64encode(f"Bearer {jwt}".encode()).decode(),
        "base64-of-json-with-a-jwt": base64.b64encode(
            json.dumps({"token": jwt}).encode()).decode(),
    }


@pytest.mark.parametrize("shape", list(_cut_shapes()))
def test_a_cut_message_never_keeps_the_start_of_a_secret_at_any_offset(shape: str) -> None:
    """Whichever character of a secret the length cut falls on (or just before or after it),
    what is kept holds no part of it that shows, and a whole JSON record still comes out."""
    secret = _cut_shapes()[shape]
    limit = 120
    logs.never_log(_cut_shapes()["registered"])
    try:
        for at in range(-2, len(secret) + 3):
            text = "x" * (limit - at) + secret + " and after it" * 20
            kept = logs.scrubbed_cut(text, limit)
            assert len(kept) <= limit + 1 and kept.endswith("…"), (at, kept)
            pieces = {secret[i:i + 8] for i in range(len(secret) - 7)}
            assert not [p for p in pieces if p in kept], (at, kept[-40:])
            record = json.loads(logs.JsonFormatter("gateway").format(logging.LogRecord(
                "wingman.crash", logging.ERROR, __file__, 0, "%s", (kept,), None)))
            assert record["message"] == kept
    finally:
        logs.forget(_cut_shapes()["registered"])

# What a token travels in, and the same without one: the detector must tell them apart however
# they are encoded (looks_like_token guards the audit trail and what the client writes; a
# refusal quoting the text shows it through redact_tokens).


def _assert_found_and_redacted(text: str) -> None:
    """The detector finds the token in ``text``, and redacting keeps the words around it and
    leaves nothing it would find (not by withholding the whole)."""
    assert logs.looks_like_token(text), text[:200]
    redacted = logs.redact_tokens(f"refused: {text} (see above)")
    assert redacted.startswith("refused: ") and redacted.endswith(" (see above)"), redacted
    assert logs.REDACTED in redacted and not logs.looks_like_token(redacted), redacted


def _padded_jwt() -> tuple[str, str, str]:
    """A JWT's segments in the standard alphabet with their padding, as a tool that does not
    strip it writes them: ``+`` and ``/`` in the payload, ``=`` before the dots."""
    header = base64.b64encode(b'{"alg":"RS256","kid":"k1"}').decode()
    payload = base64.b64encode(b'{"sub":"system:serviceaccount:ns:sa","x":"???>>>"}').decode()
    assert "=" in header and "=" in payload and "/" in payload and "+" in payload
    return header, payload, base64.b64encode(os.urandom(64)).decode()


@pytest.mark.parametrize("shape", ["padded", "standard-alphabet", "json-escaped"])
def test_a_jwt_written_padded_in_the_standard_alphabet_or_json_escaped_is_found(
        shape: str) -> None:
    """``eyJhbGc=.eyJzdWI=.sig``, ``+`` and ``/`` in the segments, and JSON's ``\\/`` for
    ``/``: still a JWT to whoever reads it."""
    header, payload, signature = _padded_jwt()
    if shape == "padded":
        token = f"{header}.{payload}.{signature}"
    elif shape == "standard-alphabet":
        token = f"{header.rstrip('=')}.{payload.rstrip('=')}.{signature.rstrip('=')}"
    else:
        token = json.dumps({"t": f"{header}.{payload}.{signature}"})[7:-2].replace(
            "/", "\\/")
        assert "\\/" in token
    for text in (token, f"Authorization: Bearer {token}", f'{{"token": "{token}"}}'):
        _assert_found_and_redacted(text)
    redacted = logs.redact_tokens(f"token={token} host=api.example.com")
    # the key and the words after are kept (and the last segment's padding, as of base64)
    assert redacted in (f"token={logs.REDACTED}{pad} host=api.example.com"
                        for pad in ("", "=", "=="))


def test_text_that_only_resembles_a_padded_or_escaped_jwt_is_not_a_token() -> None:
    """Paths, env lines and base64 values with ``=``, ``/`` and ``+`` near ``eyJ`` and dots,
    yet no ``eyJ<segment>.<segment>.``, are kept; the same with a third segment is not."""
    honest = ["CONFIG=eyJhIjoxfQ==\nHOST=api.example.com",
              "CONFIG=eyJhIjoxfQ== HOST=a.example.com",
              "/data/eyJob/readme.md", "C++/eyJx.h", "eyJ=.a.b", "eyJhIjoxfQ==.json",
              "a=eyJ.x.y", r"ns\/eyJob.done", "eyJhIjoxfQ==\n.a.b", "eyJa.=.b"]
    for text in honest:
        assert not logs.looks_like_token(text), text
        assert logs.redact_tokens(text) == text
    assert logs.looks_like_token("eyJhIjoxfQ==.json=.x")


def test_a_row_of_equals_signs_in_decoded_text_is_read_once() -> None:
    """The base64 of ``eyJ`` and a row of ``=`` with no dot after it: where the padding
    before a dot is dropped, each ``=`` of the row was tried to its end (minutes for 40 KB)."""
    started = time.process_time()
    assert not logs.looks_like_token(base64.b64encode(b"eyJ" + b"=" * 40_000).decode())
    assert not logs.looks_like_token("eyJ" + "=" * 400_000 + "x")
    assert time.process_time() - started < 2.0


def _kubeconfig(token: str | None) -> str:
    user = f"    token: {token}\n" if token else "    client-certificate-data: QUJD\n"
    return ("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
            "    server: https://10.0.0.1:6443\nusers:\n- name: u\n  user:\n" + user)


def _secret_manifest(token: str | None) -> str:
    value = base64.b64encode((token or "hunter2-not-a-token").encode()).decode()
    return ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: sa-token\n"
            f"type: Opaque\ndata:\n  token: {value}\n")


def _wrapped(text: str, width: int, eol: str, indent: str = "") -> str:
    return eol.join(indent + text[i:i + width] for i in range(0, len(text), width))


def _certificate() -> str:
    """A PEM certificate (a CA bundle, a ``tls.crt``): base64 wrapped at 64 columns."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("width", [76, 64, 60])
@pytest.mark.parametrize("eol", ["\n", "\r\n", "\\n", " \r\n"],
                         ids=["lf", "crlf", "json-escaped", "blank-before"])
@pytest.mark.parametrize("indent", ["", "    "], ids=["flush", "indented"])
@pytest.mark.parametrize("holder", [_kubeconfig, _secret_manifest])
def test_wrapped_base64_of_a_token_is_found(width: int, eol: str, indent: str,
                                           holder: Any) -> None:
    """``base64`` wraps at 76 columns, PEM at 64, YAML indents a block's lines: only the
    lines read as one encoding hold the token (a kubeconfig, a Secret's manifest)."""
    encoded = _wrapped(base64.b64encode(holder(_jwt()).encode()).decode(), width, eol, indent)
    _assert_found_and_redacted(encoded)
    _assert_found_and_redacted(f"data:\n  config: |\n{encoded}\n")


def test_wrapped_base64_without_a_token_is_not_a_token() -> None:
    """Random blobs, certificates, an env file and a kubeconfig without a token, base64
    wrapped as encoders wrap: read whole, they hold no token; the same wrapped with one
    does."""
    honest = [_certificate(), _certificate() + _certificate()]
    for _ in range(30):
        blob = base64.b64encode(os.urandom(3000)).decode()
        honest += [_wrapped(blob, 76, "\n"), _wrapped(blob, 64, "\r\n", "  ")]
    for text in (_kubeconfig(None), "CONFIG=eyJhIjoxfQ==\nHOST=api.example.com\n" * 8,
                 _certificate()):
        encoded = base64.b64encode(text.encode()).decode()
        honest += [_wrapped(encoded, 76, "\n"), _wrapped(encoded, 64, "\r\n", "    ")]
    for text in honest:
        assert not logs.looks_like_token(text), text[:200]
        assert logs.redact_tokens(text) == text
    with_token = base64.b64encode((_certificate() + _kubeconfig(_jwt())).encode()).decode()
    assert logs.looks_like_token(_wrapped(with_token, 64, "\r\n"))


@pytest.mark.parametrize("at", [10, 11, 12, 20, 41, 77])  # "Bearer " is 9 characters
@pytest.mark.parametrize("brk", ["\r\n", "\n", "\n  "])
def test_a_token_whose_base64_is_broken_over_lines_is_found(at: int, brk: str) -> None:
    """A line break anywhere in the base64 of ``Bearer <token>`` (pasted from a terminal,
    folded by a mail client), even inside the encoded ``eyJ``, leaves it a token."""
    encoded = base64.b64encode(f"Bearer {_jwt()}".encode()).decode()
    _assert_found_and_redacted(encoded[:at] + brk + encoded[at:])


def test_base64_values_on_successive_lines_are_not_read_as_a_token() -> None:
    """Lines of unrelated base64 (an env file's values, hashes) joined hold no token; the
    wrapped base64 of one among them is still found."""
    lines_ = [base64.b64encode(os.urandom(n)).decode() for n in range(10, 60)]
    lines_ += [base64.b64encode(b'{"a":1}').decode(), base64.b64encode(b"eyJ.a.b").decode()]
    for eol in ("\n", "\r\n"):
        assert not logs.looks_like_token(eol.join(lines_))
        token_lines = _wrapped(base64.b64encode(_jwt().encode()).decode(), 76, eol)
        assert logs.looks_like_token(eol.join([*lines_[:20], token_lines, *lines_[20:]]))


def _dockerconfigjson(auth: str) -> str:
    return json.dumps({"auths": {"registry.example.com": {
        "auth": base64.b64encode(auth.encode()).decode()}}})


@pytest.mark.parametrize("before", ["", "a", "ab"])
def test_base64_of_base64_holding_a_token_is_found(before: str) -> None:
    """A ``.dockerconfigjson`` whose ``auth`` is the base64 of ``user:<token>``, itself
    base64-encoded as a Secret's ``data``: two levels of base64, on one line or wrapped."""
    docker = _dockerconfigjson(f"{before}oauth2accesstoken:{_jwt()}")
    encoded = base64.b64encode(docker.encode()).decode()
    _assert_found_and_redacted(encoded)
    _assert_found_and_redacted(f'{{"data": {{".dockerconfigjson": "{encoded}"}}}}')
    _assert_found_and_redacted(_wrapped(encoded, 76, "\n"))
    twice = base64.b64encode(base64.b64encode(f"Bearer {_jwt()}".encode())).decode()
    _assert_found_and_redacted(twice)


def test_base64_of_base64_without_a_token_is_not_a_token() -> None:
    """A registry password, random blobs, twice encoded, hold no token; the same Secret
    with a token does. And no third level is read: the cost stays bounded."""
    honest = [base64.b64encode(_dockerconfigjson("robot$ci:s3cr3t-P4ssw0rd").encode()).decode(),
              base64.b64encode(base64.b64encode(b'{"eyJ": "eyJhbGciOi but no dots"}')).decode()]
    honest += [base64.b64encode(base64.b64encode(os.urandom(3000))).decode()
               for _ in range(30)]
    for text in honest:
        assert not logs.looks_like_token(text), text[:200]
    docker = _dockerconfigjson(f"robot:{_jwt()}")
    assert logs.looks_like_token(base64.b64encode(docker.encode()).decode())
    thrice = base64.b64encode(base64.b64encode(docker.encode())).decode()
    assert not logs.looks_like_token(thrice)  # three levels: beyond what is decoded


@pytest.mark.parametrize("width", [16, 20, 64, 76])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_base64_of_wrapped_base64_holding_a_token_is_found_wherever_its_lines_end(
        width: int, eol: str) -> None:
    """``base64 file | base64``: the inner base64 is wrapped (76 columns by default; other
    tools wrap shorter), so a line break may fall inside what the outer encoding of an encoded
    ``eyJ`` is recognised by. The token is found at every offset against the lines."""
    for before in range(width + 4):
        text = "#" * before + "\ntoken: " + _jwt() + "\n"
        inner = _wrapped(base64.b64encode(text.encode()).decode(), width, eol) + eol
        outer = _wrapped(base64.b64encode(inner.encode()).decode(), 76, "\n")
        assert logs.looks_like_token(outer), (width, eol, before)


def test_paths_and_urls_holding_eyJ_and_dots_are_not_tokens() -> None:
    """A path or a URL with a directory starting ``eyJ`` and dots after it is written with
    ``/``, which a JWT's segment may hold only in the standard alphabet: such a first segment
    must decode to a header (printable JSON) to be a token's. A header that holds ``/`` is
    still found."""
    honest = ["/var/cache/eyJ0/archive.tar.gz", "kubectl cp ns/pod:/tmp/eyJx/a.b.c ./out",
              "registry.example.com/eyJteam/app.v1.2:tag",
              "s3://bucket/eyJhbGc/part.0001.parquet", "C++/eyJabc+def/x.y.z",
              "/var/cache/eyJ0/eyJ.tar.gz", "https://cdn.example/eyJx/eyJ.min.js.map"]
    for text in honest:
        assert not logs.looks_like_token(text), text
        assert logs.redact_tokens(text) == text
    header = base64.b64encode(b'{"alg":"RS256","kid":"??>>"}').decode().rstrip("=")
    assert "/" in header
    _assert_found_and_redacted(f"{header}.{_jwt().split('.', 1)[1]}")
    spaced = base64.b64encode(b'{"typ":"JWT",\r\n "alg":"HS256","kid":"??>>"}').decode()
    assert "/" in spaced
    _assert_found_and_redacted(f"{spaced.rstrip('=')}.{_jwt().split('.', 1)[1]}")
    # a token in the same run after what only resembles one is still one
    blob = base64.b64encode(b'{"a":"??>>"}').decode()
    for text in (f"/cb/eyJ0/{_jwt()}", f"eyJx+{_jwt()}", f"{blob}/{_jwt()}"):
        assert logs.looks_like_token(text), text
        assert not logs.looks_like_token(logs.redact_tokens(text)), text


#: How a JWT reaches a prompt or a command line disguised (copied from a terminal, a mail, a
#: wrapped page), each the token to the eye or once joined: the id and how it is written.
_DISGUISED_JWTS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("wrapped-lf", lambda t: _wrapped(t, 76, "\n")),
    ("wrapped-crlf", lambda t: _wrapped(t, 20, "\r\n")),
    ("wrapped-cr", lambda t: _wrapped(t, 33, "\r")),
    ("wrapped-indented", lambda t: _wrapped(t, 64, "\n", "    ")),
    ("wrapped-blank-before-break", lambda t: _wrapped(t, 50, " \r\n", "\t")),
    ("wrapped-in-eyJ", lambda t: t[:2] + "\n" + t[2:]),
    ("broken-after-dots", lambda t: t.replace(".", ".\n  ")),
    ("broken-before-dots", lambda t: t.replace(".", "\r\n.")),
    ("spaced-after-dots", lambda t: t.replace(".", ". ")),
    ("spaced-before-dots", lambda t: t.replace(".", " .")),
    ("tab-and-no-break-space-at-dots", lambda t: t.replace(".", "\t.\xa0\u2009")),
    ("zero-width-spaces", lambda t: "\u200b".join(t)),
    ("joiners", lambda t: t[:3] + "\u200d" + t[3:30] + "\u200c" + t[30:]),
    ("word-joiner-and-soft-hyphen", lambda t: t[:12] + "\u2060" + t[12:50] + "\xad" + t[50:]),
    ("byte-order-marks", lambda t: "\ufeff" + t.replace(".", "\ufeff.")),
    ("tags-and-variation-selectors", lambda t: t[:1] + "\U000e0041\ufe0f" + t[1:]),
    ("invisible-and-wrapped", lambda t: _wrapped("\u2060".join(t), 40, "\r\n")),
    ("invisible-and-spaced", lambda t: "\u200b".join(t[:20]) + t[20:].replace(".", ". ")),
    ("base64-with-zero-width-spaces",
     lambda t: "\u200b".join(base64.b64encode(json.dumps({"token": t}).encode()).decode())),
    ("wrapped-vertical-tab", lambda t: _wrapped(t, 40, "\v")),
    ("wrapped-form-feed", lambda t: _wrapped(t, 30, "\f")),
    ("wrapped-record-separator", lambda t: _wrapped(t, 35, "\x1e")),
    ("wrapped-next-line", lambda t: _wrapped(t, 25, "\x85")),
    ("wrapped-line-separator", lambda t: _wrapped(t, 50, "\u2028", " ")),
    ("broken-after-dots-paragraph-separator", lambda t: t.replace(".", ".\u2029")),
    ("wrapped-json-escaped", lambda t: _wrapped(t, 60, "\\n")),
    ("wrapped-json-escaped-crlf-indented", lambda t: _wrapped(t, 45, "\\r\\n", "  ")),
    ("broken-at-dots-escaped-separator", lambda t: t.replace(".", "\\u2028.")),
    ("wrapped-text-log-escaped-vertical-tab", lambda t: _wrapped(t, 33, "\\x0b")),
    ("bidirectional-marks", lambda t: t[:10] + "\u200e" + t[10:40] + "\u202c\u2066" + t[40:]),
    ("wrapped-json-escaped-twice", lambda t: _wrapped(t, 20, "\\\\n")),
    ("wrapped-json-escaped-unicode-lf", lambda t: _wrapped(t, 10, "\\u000a")),
    ("wrapped-json-escaped-unicode-crlf", lambda t: _wrapped(t, 23, "\\u000d\\u000A")),
    ("wrapped-text-log-escaped-lf", lambda t: _wrapped(t, 17, "\\x0a")),
    ("escaped-invisible-characters",
     lambda t: t[:20] + "\\u200b" + t[20:50] + "\\u00AD" + t[50:]),
    ("escaped-tab-and-space-at-dots", lambda t: t.replace(".", "\\u0009.\\u0020")),
    # as Python's repr (``%r`` in a log call) and ASCII-only JSON write them
    ("repr-escaped-soft-hyphen", lambda t: t[:2] + "\\xad" + t[2:30] + "\\xAD" + t[30:]),
    ("escaped-unicode-spaces-at-dots", lambda t: t.replace(".", "\\u2003.\\u00A0")),
    ("repr-escaped-no-break-space-at-dots", lambda t: t.replace(".", ".\\xa0")),
)
#: Rows where every character of the token stands apart (``e``, ``y`` and ``J`` of each
#: ``eyJ`` too): inside base64, nothing is left that the encoded ``eyJ`` is recognised by, and
#: decoding every base64 run to look would cost every ordinary string; not read there.
_EVERY_CHARACTER_APART = {"zero-width-spaces", "invisible-and-wrapped",
                          "base64-with-zero-width-spaces"}


def _jwe(key: bool) -> str:
    """A JWE: its header (``enc``), its encrypted key (empty for ``"alg":"dir"``), its IV,
    ciphertext and tag."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b'{"alg":"RSA-OAEP","enc":"A256GCM"}' if key else b'{"alg":"dir","enc":"A256GCM"}'
    return ".".join([b64(header), b64(bytes(range(256))) if key else "", b64(b"\x01" * 12),
                     b64(b"ciphertext " * 9), b64(b"\x02" * 16)])


#: Tokens of each shape a disguise is tried on: a capability token, an unsigned one (its
#: signature empty), one signed in both alphabets, one whose header is shorter than
#: ``{"alg":"none"}`` (``{"alg":"x"}``), and JWEs, with and without an encrypted key.
_SHAPES = (_jwt(), "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
           _jwt().rsplit(".", 1)[0] + "." + "Zx-_" * 20, "eyJhbGciOiJ4In0.eyJiIjoyfQ.x",
           _jwe(key=True), _jwe(key=False))


@pytest.mark.parametrize("disguise", [row[1] for row in _DISGUISED_JWTS],
                         ids=[row[0] for row in _DISGUISED_JWTS])
def test_a_jwt_wrapped_spaced_or_holding_invisible_characters_is_found(
        disguise: Callable[[str], str]) -> None:
    """A token copied with its line breaks, spaced at its dots, or holding characters that
    render as nothing is still one: alone, after a header, inside a line of prose; a refusal
    quoting it keeps the words around it."""
    for token in _SHAPES:
        shown = disguise(token)
        for text in (shown, f"Authorization: Bearer {shown}", f"use this:\n{shown}\n\nplease"):
            _assert_found_and_redacted(text)


@pytest.mark.parametrize("disguise", [row[1] for row in _DISGUISED_JWTS
                                      if row[0] not in _EVERY_CHARACTER_APART],
                         ids=[row[0] for row in _DISGUISED_JWTS
                              if row[0] not in _EVERY_CHARACTER_APART])
def test_a_disguised_jwt_inside_encoded_text_is_found(disguise: Callable[[str], str]) -> None:
    """A token wrapped, spaced or holding invisible characters in a file that is then
    base64-encoded (a kubeconfig, a Secret's ``data``, a ``.dockerconfigjson``): decoded, it is
    read as the text itself is, once or twice encoded, and redacted with its block. (Where
    every ``eyJ`` of a token is broken, its base64 holds nothing it is recognised by.)"""
    shapes = [shown for shown in map(disguise, _SHAPES) if "eyJ" in shown]
    assert shapes
    for shown in shapes:
        encoded = base64.b64encode(f"users:\n- user:\n    token: {shown}\n".encode())
        _assert_found_and_redacted(encoded.decode())
        _assert_found_and_redacted(base64.b64encode(encoded).decode())


#: A token followed by a sentence's end and words: a break or a blank beside a dot joins them
#: to a disguised one (read joined, they would be segments after its signature), and a whole
#: one's run holds the dot. The id, how the text is written around a token, and what
#: redacting it leaves (``R`` where the token was).
_WORDS_AFTER_A_TOKEN: tuple[tuple[str, Callable[[str], str], str], ...] = (
    ("spaced-then-sentences", lambda t: t.replace(".", ". ") + ". thanks. bye",
     "R. thanks. bye"),
    ("wrapped-then-a-break-after-its-end", lambda t: _wrapped(t, 10, "\n") + ".\nthanks. bye",
     "R.\nthanks. bye"),
    ("json-escaped-breaks", lambda t: _wrapped(t, 10, "\\n") + ".\\nthanks. bye",
     "R.\\nthanks. bye"),
    ("line-separators", lambda t: _wrapped(t, 12, "\u2028") + ".\u2028thanks. bye",
     "R.\u2028thanks. bye"),
    ("invisible-then-sentences", lambda t: "\u200b".join(t) + ". thanks. bye",
     "R. thanks. bye"),
    ("spaced-before-dots", lambda t: t.replace(".", " .") + " . thanks", "R . thanks"),
    ("two-tokens", lambda t: t.replace(".", ". ") + ". and. " + t.replace(".", ".\n") + ". done",
     "R. and. R. done"),
    ("whole-then-sentences", lambda t: t + ". thanks. bye", "R. thanks. bye"),
)


@pytest.mark.parametrize(("written", "left"), [row[1:] for row in _WORDS_AFTER_A_TOKEN],
                         ids=[row[0] for row in _WORDS_AFTER_A_TOKEN])
def test_redacting_a_jwt_stops_at_its_last_segment(written: Callable[[str], str],
                                                              left: str) -> None:
    """The token goes from its ``eyJ`` to the end of its signature (of its tag, for a JWE);
    the sentence after it stays, as the words before it do. (An unsigned token has no
    signature to end at: the word after it reads as one.)"""
    for token in (t for t in _SHAPES if not t.endswith(".")):
        shown = logs.redact_tokens(f"use this:\n{written(token)}")
        assert shown == "use this:\n" + left.replace("R", logs.REDACTED), (token, shown)


@pytest.mark.parametrize("fmt", logs.FORMATS)
@pytest.mark.parametrize("disguise", [row[1] for row in _DISGUISED_JWTS],
                         ids=[row[0] for row in _DISGUISED_JWTS])
def test_a_disguised_jwt_is_scrubbed_from_log_lines(stream: io.StringIO, fmt: str,
                                                    disguise: Callable[[str], str]) -> None:
    """A log line carrying a token wrapped, spaced or holding invisible characters (an API
    server's error quoting what a person pasted) is scrubbed as the audit's check finds it,
    its line breaks as the line writes them (escaped): the line, read back, holds no token,
    and the words around the token stay."""
    logs.setup_logging(fmt, "info", component="operator", stream=stream)
    for token in (_jwt(), _jwe(key=True)):
        logging.getLogger("wingman.operator").warning("refused %s (see above)", disguise(token))
    written = stream.getvalue().splitlines()
    assert len(written) == 2, written
    for line in written:
        message = json.loads(line)["message"] if fmt == "json" else line
        assert logs.REDACTED in message and not logs.looks_like_token(message), message
        assert "refused " in message and message.endswith(" (see above)"), message


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_log_lines_with_dots_and_breaks_but_no_jwt_are_kept(stream: io.StringIO,
                                                           fmt: str) -> None:
    """The same texts logged, their breaks escaped as the line writes them: nothing is
    scrubbed. (Not their base64: the scrubber takes any run of base64 that begins as the
    encoding of ``eyJ`` does for a token, by its shape alone.)"""
    logs.setup_logging(fmt, "info", component="operator", stream=stream)
    for text in _NO_TOKEN_WRITTEN:
        logging.getLogger("wingman.operator").info("%s", text)
    written = stream.getvalue().splitlines()
    assert not [line for line in written if logs.REDACTED in line]
    if fmt == "json":
        assert [json.loads(line)["message"] for line in written] == _NO_TOKEN_WRITTEN


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\n   "], ids=["lf", "crlf", "indented"])
def test_a_jwt_wrapped_at_any_column_is_found(eol: str) -> None:
    token = _jwt()
    for width in range(1, len(token)):
        assert logs.looks_like_token(_wrapped(token, width, eol)), width


_UID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
#: Prose, names, hashes and identifiers on lines, sentences after an ``eyJ`` word, and the
#: joiners writing needs, written with every kind of line break (escaped too, once or twice):
#: read joined at their breaks and without invisible characters, no first segment reads as a
#: JWT's header (nor a JWE's), and no second one as its claims; and the base64 of the last ones.
_NO_TOKEN_WRITTEN = ["The rollout finished. Next: scale web to 3.\nDone. See docs.example.com.",
              "eyJob finished. Next. Then. Done.", "eyJob.\nnext.\nstep.",
              "eyJhbGciOi is how a JWT starts.\nSee RFC 7519. Section 7.2.",
              "ey\nJ alone.\nx.\ny.",
              "config: eyJhIjoxLCJiIjoyLCJjIjozfQ\nwww.example.com. up",
              _wrapped("sha256:" + "ab" * 32, 24, "\n") + ".\n" + _UID + ".\n" + _UID,
              "resourceVersion: 123456.\nresourceVersion: 123457.\nuid: " + _UID,
              "deployment.apps/web-7f9c. pod/web-7f9c-abcde.\nreplicaset.apps/web-7f9c .x",
              "v1.2.3. v1.2.4.\nv2.0.0 . v2.0.1", "CONFIG=eyJhIjoxfQ==\n.HOST=a.example.com",
              _wrapped(base64.b64encode(b"Hello world. Not a token. " * 20).decode(), 76, "\n"),
              "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645. \U0001f469\u200d\U0001f4bb.",
              "r\u00e9sum\u00e9\xad. na\u00efve \u201cquoted\u201d \u2014 done.\u200b x.y",
              "e\u200byJob.\u200bdone",
              # Python's repr escapes between sentences
              "eyJob finished.\\xa0Next.\\xad Then.\\u00a0Done. eyJob\\xad.\\u2003x.y",
              # other line breaks, and a JSON log's escaped ones, between sentences
              "The rollout finished.\u2028Next: scale web.\x85Done.\fSee docs.\vexample.com.",
              '{"message": "eyJob finished.\\nNext.\\nThen. Done.\\r\\nBye."}',
              "eyJob finished.\\u2028Next.\\x0bThen.\\fDone.\\u000aBye.\\u000D\\u000ASee"
              "\\u200bu.\\u0009ok",
              # a short header, but no claims; a header and four words, but no JWE's header
              "eyJhIjoxfQ. done.\nnext.", "eyJhIjoxfQ.\nfoo.bar",
              # short base64 JSON values ending sentences: no header names an algorithm
              "values: eyJhIjoxfQ. eyJiIjoyfQ. ok", "eyJpIjowfQ.\neyJpIjoxfQ.\nnext",
              "eyJhbGciOiJIUzI1NiJ9. a. b. c. d",
              # a header naming an ``enc`` but no ``alg``, or words too short for an IV or a tag
              "eyJlbmMiOiJ4In0. a. b. c. d.", "eyJlbmMiOiJBMjU2R0NNIn0. " + "a" * 30 + ". b. c. d.",
              "eyJhbGciOiJkaXIiLCJlbmMiOiJ4In0. . IV. Ciphertext. Tag.",
              '{"msg": "config: eyJhIjoxLCJiIjoyfQ\\nwww.example.com. up. next. done"}',
              # JSON inside a JSON log line, an escaped tab, a Windows path's backslashes
              '{"log": "{\\"msg\\": \\"eyJob.\\\\nnext.\\\\nstep.\\"}"}',
              "eyJob.\\tnext.\\tstep.", r"C:\new\eyJob.d\nested.x\file.y"]
_NO_TOKEN = _NO_TOKEN_WRITTEN + [base64.b64encode(text.encode()).decode()
                                for text in _NO_TOKEN_WRITTEN[-16:]]


def test_text_with_dots_blanks_or_invisible_characters_but_no_jwt_is_not_a_token() -> None:
    """Neither found nor redacted."""
    for text in _NO_TOKEN:
        assert not logs.looks_like_token(text), repr(text)
        assert logs.redact_tokens(text) == text


def test_every_character_that_renders_as_nothing_is_read_as_nothing() -> None:
    """The detector's table of invisible characters holds every format character (Cf) of the
    Unicode this Python knows, and every default-ignorable one the CRDs refuse."""
    import unicodedata

    from wingman.model import text

    every = "".join(map(chr, range(sys.maxunicode + 1)))
    formats = "".join(c for c in every if unicodedata.category(c) == "Cf")
    assert not logs._INVISIBLE.sub("", formats), [f"U+{ord(c):04X}" for c in
                                                 logs._INVISIBLE.sub("", formats)]
    assert not logs._INVISIBLE.sub("", "".join(text.IGNORABLE.findall(every)))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16"])
@pytest.mark.parametrize("bom", [False, True])
def test_base64_of_utf16_text_holding_a_token_is_found(encoding: str, bom: bool) -> None:
    """A file saved as UTF-16 (either byte order, a BOM or not) holding a token, or holding
    its base64, then base64-encoded."""
    for text in (_kubeconfig(_jwt()), _secret_manifest(_jwt())):
        raw = text.encode(encoding)
        if bom and encoding != "utf-16":
            raw = ("\ufeff" + text).encode(encoding)
        _assert_found_and_redacted(base64.b64encode(raw).decode())
        _assert_found_and_redacted(_wrapped(base64.b64encode(raw).decode(), 76, "\r\n"))


def test_base64_of_utf16_text_without_a_token_is_not_a_token() -> None:
    """UTF-16 text that holds ``eyJ`` but no token (an env file's base64 JSON value, then a
    host name on the next line), and random UTF-16: not a token; with one, it is."""
    env = "CONFIG=eyJhIjoxfQ==\r\nHOST=api.example.com\r\nNAME=eyJob.done\r\n"
    honest = [base64.b64encode(env.encode(e)).decode() for e in ("utf-16-le", "utf-16-be")]
    honest += [base64.b64encode(os.urandom(3000).decode("latin-1").encode("utf-16")).decode()
               for _ in range(30)]
    honest.append(env.encode("utf-16-le").decode("latin-1"))  # as bytes read as characters
    for text in honest:
        assert not logs.looks_like_token(text), text[:200]
    assert logs.looks_like_token(base64.b64encode((env + _jwt()).encode("utf-16-le")).decode())


def test_the_detector_stays_linear_on_hostile_text() -> None:
    """Text made to cost the most (encoded ``eyJ`` everywhere, a line break after every
    character, ``e\\0y\\0J`` repeated, rows of ``=`` or of blanks, base64 of base64) is read
    in one pass per level, and a token at its end is still found."""
    token = base64.b64encode(f"Bearer {_jwt()}".encode()).decode()
    hostile = ["ZXlK\n" * 200_000, "Z\r\nX\r\nl\r\nK" * 100_000, "e\0y\0J\0" * 150_000,
               "eyJa=" * 200_000, "=" * 1_000_000, "\n " * 500_000,
               " \n" * 500_000, "a " * 500_000 + "\n",
               base64.b64encode(("ZXlK" * 200_000).encode()).decode(),
               base64.b64encode(base64.b64encode(("eyJa" * 150_000).encode())).decode(),
               "eyJ/" * 250_000 + ".a.b.", "eyJa. " * 170_000, "eyJ.\n" * 200_000,
               "e\ny\nJ\n" * 170_000, "eyJhbGciOiJIUzI1NiJ9. a " * 40_000, "eyJ\xad." * 200_000,
               "e\u200b" * 500_000, "eyJ" + " " * 1_000_000 + ".",
               "eyJhbGciOiJIUzI1NiJ9" * 50_000 + ". a. b. c. d", "eyJob.\\n" * 150_000,
               "e\\\\ny\\\\nJ" * 100_000]
    for text in hostile:
        started = time.process_time()
        assert not logs.looks_like_token(text)
        assert logs.looks_like_token(text + " " + _wrapped(token, 20, "\r\n"))
        assert time.process_time() - started < 5.0, text[:20]


def test_a_short_string_is_read_in_a_few_passes_not_one_per_mark() -> None:
    """What an audit record holds is mostly short words (a verdict, a reason, a name): each is
    read for every mark of base64 holding ``eyJ`` (hundreds, twice encoded and wrapped) in one
    search, not one search per mark. One per mark cost 5 ms per record, which put the audit's
    check for tokens ahead of everything else in a burst of requests (create → consensus
    7-12 s at 1,000 instead of under one); 50,000 such words took 4 s of CPU then."""
    words = ["approve", "AutoApproved", "ApprovalRequest", "blast-radius", "verdict",
             "2026-12-06T23:47:27Z", "kubectl rollout restart deployment/web -n apps",
             "sha256:" + "ab" * 32, "paused — “web” ✓", "\u0645\u06cc\u200c\u062e\u0648"] * 5_000
    started = time.process_time()
    assert not any(logs.looks_like_token(word) for word in words)
    assert time.process_time() - started < 1.5


_UNSIGNED = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."


@pytest.mark.parametrize("before", ["", "B", "Be", "Bearer ", "token: "])
@pytest.mark.parametrize("after", ["", "\n"], ids=["at-the-end", "then-a-line-break"])
def test_an_unsigned_jwt_at_the_end_of_base64_is_found(before: str, after: str) -> None:
    """An unsigned token (``alg: none``) ends with its second dot: at the end of what was
    encoded, that dot is in the last group, which the encoder pads; the group is read too.
    The same without its final dot is two segments, no token."""
    _assert_found_and_redacted(base64.b64encode(f"{before}{_UNSIGNED}{after}".encode()).decode())
    halved = base64.b64encode(f"{before}{_UNSIGNED[:-1]}{after}".encode()).decode()
    assert not logs.looks_like_token(halved) and logs.redact_tokens(halved) == halved
