"""One log format for every Wingman process (operator, gateway, command line, chat, ...).

``setup_logging(fmt, level, component=...)`` configures the root logger once: JSON lines on
stderr for log pipelines (``WINGMAN_LOG_FORMAT=json``), or one readable line per record for
people (``text``). Every JSON line has the same keys first::

    {"time": "2026-11-25T12:00:00.123Z", "level": "info", "component": "operator",
     "logger": "wingman.operator.grants", "message": "grant denied", ...}

then the record's ``extra={...}`` fields as keys of their own (``grant``, ``reason``,
``token_sha256`` ...), ``object`` (kind, namespace, name, uid) when the framework logs on behalf
of an object, and ``error`` with the traceback of an exception. The framework's own loggers
(kopf, the API client) go through the same handler, so an operator pod speaks one format.

Callers log hashes of tokens and keys, never their values. As a second line of defence every
line is scrubbed of what looks like a token whoever wrote it (an API server's error message that
echoes a Secret, a framework's debug line): a JWT (``eyJ<segment>.<segment>.``, the capability
tokens and ServiceAccount tokens) and the base64 of one (how a Secret's ``data`` carries it:
the token alone, or inside other text such as ``Bearer <token>`` or a kubeconfig); and
a process may register a secret it holds (``never_log``), which is scrubbed from every line too.

This module imports the standard library only: the gateway and the command line use it without
the operator's framework.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import IO, Any

FORMATS = ("json", "text")
LEVELS = ("debug", "info", "warning", "error")
REDACTED = "[REDACTED]"

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
# Framework attributes that are not log fields (kopf's per-object logger adds them).
_INTERNAL = frozenset({"k8s_ref", "k8s_skip", "settings"})
_FIRST = ("time", "level", "component", "logger", "message")

#: A run of the characters a JWT, the base64 of one (its padding aside), or a path holding one
#: is made of; the runs of a line are disjoint, so finding them is linear in its length.
_RUN = re.compile(r"[A-Za-z0-9_.+/-]+")
_B64_OF_JWT = "ZXlK"  # the base64 of "eyJ", a token at the start of what was encoded
_B64_OF_JWT_MIN = 24  # characters after it: shorter is no token


def _shifted(prefix: bytes, shift: int) -> str:
    """What the base64 of text holding ``prefix`` always contains when the prefix starts
    ``shift`` bytes into a group of three (after ``Bearer ``, inside JSON or a kubeconfig): the
    groups made of the prefix alone."""
    whole = prefix[3 - shift:]
    return base64.b64encode(whole[:len(whole) // 3 * 3]).decode()


#: The base64 of a token that does not start a group: JWT headers begin with these fields.
_B64_SHIFTED = tuple(_shifted(p, shift) for p in (b"eyJhbGciOi", b"eyJ0eXAiOi", b"eyJraWQiOi")
                     for shift in (1, 2))

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def never_log(value: str) -> None:
    """Scrub ``value`` (a token, a key) from every line this process logs from now on."""
    if len(value) >= 8:  # a short value would blank out ordinary words
        with _secrets_lock:
            _secrets.add(value)


def forget(value: str) -> None:
    """Stop scrubbing ``value`` (the process no longer holds it)."""
    with _secrets_lock:
        _secrets.discard(value)


def _token_shaped(run: str) -> bool:
    """True when ``run`` (no spaces or quotes) holds a JWT (``eyJ<segment>.<segment>.``) or the
    base64 of one: of text that starts with it (``ZXlK`` and at least 24 more characters), or
    of text that holds it further in (its header's first field, shifted)."""
    at = run.find(_B64_OF_JWT)
    if at != -1 and len(run) - at - len(_B64_OF_JWT) >= _B64_OF_JWT_MIN:
        return True
    if len(run) >= _B64_OF_JWT_MIN and any(m in run for m in _B64_SHIFTED):
        return True
    return holds_jwt(run)


def base64_readings(run: str, *, least: int = 0) -> Iterator[bytes]:
    """What ``run`` decodes to, read as standard or URL-safe base64 (each alphabet's two
    characters mapped onto the other's, padding dropped) from each of its first four
    characters, for bodies of at least ``least`` characters: where the encoding starts in text
    that is not all of it (``token=...``) is unknown, so every alignment is tried."""
    for alphabet in ("std", "url"):
        candidate = run.rstrip("=")
        if alphabet == "std":
            candidate = candidate.replace("-", "+").replace("_", "/")
        else:
            candidate = candidate.replace("+", "-").replace("/", "_")
        for skip in range(4):
            body = candidate[skip:]
            body = body[: len(body) - len(body) % 4]
            if len(body) < least:
                continue
            try:
                yield (base64.b64decode(body, validate=True) if alphabet == "std"
                       else base64.urlsafe_b64decode(body))
            except (binascii.Error, ValueError):
                continue


def holds_jwt(run: str) -> bool:
    """True when ``run`` (no spaces or quotes) holds ``eyJ<segment>.<segment>.``: a JWT (linear
    time, no regex backtracking). The audit trail refuses text that does; logs scrub it."""
    if "eyJ" not in run:
        return False
    segments = run.split(".")
    for i in range(len(segments) - 2):
        first = segments[i].find("eyJ")
        if first != -1 and first + 3 < len(segments[i]) and segments[i + 1]:
            return True
    return False


def _redact_run(match: re.Match[str]) -> str:
    return REDACTED if _token_shaped(match.group()) else match.group()


def _scrub(line: str) -> str:
    """``line`` without the tokens the audit's check (:func:`looks_like_token`) finds: by
    their shape first (a run holding a JWT or its base64), then, where a token is still found
    (wrapped over lines, the breaks JSON-escaped; spaced at its dots; holding invisible
    characters; inside wrapped base64), as :func:`redact_tokens` replaces it; and the
    secrets this process registered."""
    shaped = "eyJ" in line or _B64_OF_JWT in line or any(m in line for m in _B64_SHIFTED)
    if shaped:
        line = _RUN.sub(_redact_run, line)
    # an ``eyJ``, broken or not (what a disguised token holds), or the shape above, or the
    # line is not read further: one search (none without a ``J``), where the whole check
    # would cost every line several times what scrubbing it did
    if ((shaped or ("J" in line and _HIDDEN_EYJ.search(line) is not None))
            and looks_like_token(line)):
        line = _redacted(line)
    with _secrets_lock:
        held = list(_secrets)
    for secret in held:
        line = line.replace(secret, REDACTED)
    return line


# What would break a record into more lines, or act on a terminal that shows it: after
# ``json.dumps`` (which escapes U+0000..U+001F) DEL, the C1 controls (U+0085 is a line break,
# U+009B a CSI) and Unicode's line and paragraph separators (``str.splitlines`` splits on them);
# in text, every control character but the tab too. And in both, Unicode's bidirectional
# controls (U+061C, U+200E/F, U+202A..E, U+2066..9), which reorder what a viewer shows (a name
# read backwards, a field seen in another's place). A message may carry a request's text, an
# approver's name or an API server's answer: none of it may forge a record after its own, or
# change how its own reads.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f\u2028\u2029{_BIDI}]")
_TEXT_UNSAFE = re.compile(f"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
_TEXT_ESCAPES = {"\n": "\\n", "\r": "\\r"}


CRASH_MESSAGE_MAX = 1000
"""The most characters of an uncaught exception's message its record carries (its traceback,
in ``error``, carries all of it, scrubbed as a whole)."""
_RUN_AT_END = re.compile(r"[A-Za-z0-9_.+/-]+\Z")


def scrubbed_cut(text: str, limit: int) -> str:
    """``text`` scrubbed (:func:`_scrub`), then cut to ``limit`` characters and ``…``. Scrubbed
    first: a token cut in two is no longer recognisable, and its half would stay. And a run of
    token characters the cut falls inside is dropped whole, so what is kept never ends with the
    start of something that could be a secret the scrubber would have seen whole."""
    text = _scrub(text)
    if len(text) <= limit:
        return text
    kept = text[:limit]
    if _RUN.fullmatch(text[limit - 1:limit + 1]):  # the cut falls inside a run
        kept = _RUN_AT_END.sub("", kept)
    return kept + "…"


# The escapes are written with uppercase hex digits (``\u202E``, ``\x1E``): they are
# written after the line was scrubbed, so an escape ending in ``e`` followed by a token
# without its first letter (``yJhbGci...``) would spell the token in the line.
def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04X}"


def _text_escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _TEXT_ESCAPES.get(char) or (f"\\x{ord(char):02X}" if ord(char) < 0x100
                                       else f"\\u{ord(char):04X}")


def _time(record: logging.LogRecord) -> str:
    stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _object(record: logging.LogRecord) -> dict[str, Any] | None:
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict):
        return None
    return {k: ref[k] for k in ("kind", "namespace", "name", "uid") if ref.get(k)}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and k not in _INTERNAL and not k.startswith("_")
            and v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the keys of ``_FIRST`` always, in that order."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _time(record), "level": record.levelname.lower(),
            "component": self.component, "logger": record.name,
            "message": record.getMessage(),
        }
        obj = _object(record)
        if obj:
            out["object"] = obj
        for key, value in _fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        # scrubbed before what would act on a terminal is escaped: a bidirectional control
        # inside a token is then read as the invisible character it is, not as ``\u200e``
        dumped = json.dumps(out, default=str, ensure_ascii=False)
        line = _scrub(dumped)
        if line != dumped and not _is_json(line):
            # a redaction began inside one of json's escapes (``\u001e`` then ``yJ...``, a
            # token without its first letter, reads as a run holding ``eyJ``): the escape
            # goes with it, so the line stays one JSON object
            line = _CUT_ESCAPE.sub(REDACTED, line)
            if not _is_json(line):  # (not seen) each string scrubbed on its own
                line = json.dumps(_scrubbed(json.loads(dumped)), ensure_ascii=False)
        if _READ_OTHERWISE.search(line) is not None and _holds_token(json.loads(line)):
            # json's escapes make a string read otherwise in the line than once read back (a
            # backslash doubled: a wrap written ``\\n`` in the text is no break in the line;
            # a NUL written ``\u0000``: UTF-16 read a byte a character): what a reader of the
            # record gets back is what must hold no token, so each string is scrubbed on its own
            line = json.dumps(_scrubbed(json.loads(line)), ensure_ascii=False)
        return _JSON_UNSAFE.sub(_json_escaped, line)


# A JSON escape a redaction cut: a backslash that starts an escape (after an even number of
# them), the letters of a ``\uXXXX`` before the cut, then the redaction.
_CUT_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*+\\(?:u[0-9a-fA-F]{0,3}+)?" + re.escape(REDACTED))


#: A JSON escape that the scrubber does not read as it reads the character it stands for:
#: any but ``\n`` and ``\r`` (read as line breaks, as the raw ones are) and ``\"``. A line
#: without one reads as its strings do once read back, and is not read again (most lines: a
#: traceback's or a command's output's line breaks are ``\n``).
_READ_OTHERWISE = re.compile(r'\\[^nr"]')


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _holds_token(value: Any) -> bool:
    """Whether a string in ``value`` (what ``json.loads`` gives), a key too, holds what
    :func:`looks_like_token` finds."""
    if isinstance(value, str):
        return looks_like_token(value)
    if isinstance(value, list):
        return any(_holds_token(v) for v in value)
    if isinstance(value, dict):
        return any(looks_like_token(k) or _holds_token(v) for k, v in value.items())
    return False


def _scrubbed(value: Any) -> Any:
    """``value`` (what ``json.loads`` gives) with every string in it scrubbed
    (:func:`_scrub`), keys too; a string that still holds a token (one the line's escapes hid
    from the scrubber, as UTF-16 read a byte a character), or whose JSON form still holds what
    scrubbing takes (an escape's letters that spell a token with the text after them), is
    redacted whole."""
    if isinstance(value, str):
        value = _scrub(value)
        if looks_like_token(value):
            return REDACTED
        written = json.dumps(value, ensure_ascii=False)
        return value if _scrub(written) == written else REDACTED
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {(REDACTED if looks_like_token(key := _scrub(k)) else key): _scrubbed(v)
                for k, v in value.items()}
    return value


class TextFormatter(logging.Formatter):
    """``time LEVEL component logger [namespace/name] message key=value ...`` for people."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        parts = [_time(record), f"{record.levelname:<7}", self.component, record.name]
        obj = _object(record)
        if obj:
            where = "/".join(str(obj[k]) for k in ("namespace", "name") if k in obj)
            parts.append(f"[{where}]")
        parts.append(record.getMessage())
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        # scrubbed before it is escaped, as a JSON line is (``JsonFormatter.format``)
        line = _TEXT_UNSAFE.sub(_text_escaped, _scrub(" ".join(parts)))
        if record.exc_info:  # many lines, each begun with a tab: no record line starts so
            line += "".join(f"\n\t{_TEXT_UNSAFE.sub(_text_escaped, part)}" for part in
                            _scrub(self.formatException(record.exc_info)).splitlines())
        return line


class _Handler(logging.StreamHandler[IO[str]]):
    """Ours, so a second ``setup_logging`` replaces it instead of adding another."""


def setup_logging(fmt: str = "json", level: str = "info", *, component: str,
                  stream: IO[str] | None = None) -> None:
    """Configure the root logger of this process (idempotent). ``fmt`` is one of
    :data:`FORMATS`, ``level`` one of :data:`LEVELS` (settings validate both)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {FORMATS}")
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {LEVELS}")
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(component) if fmt == "json" else TextFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)]
    root.addHandler(handler)
    root.setLevel(level.upper())
    debug = level == "debug"
    # the framework reports every successful handler and timer run at INFO: at scale that is
    # noise, so it speaks at warning and above unless debugging
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in ("urllib3", "httpx", "httpcore", "asyncio", "kubernetes"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def install_excepthook(component: str) -> None:
    """Write an exception nothing caught as one record in this format, not Python's traceback.

    Python's own hook prints the traceback as it is, and an exception's message may hold what
    an input carried (a line break that forges a record of its own, a terminal's escape
    sequence); a record of this module escapes and scrubs it. The record goes through the
    handler :func:`setup_logging` installed; before that (a crash during the imports or while
    reading the settings) through one in ``WINGMAN_LOG_FORMAT`` (json or text; text when unset
    or not one of them) on stderr. Install it as early as a process can."""

    def emit(record: logging.LogRecord) -> None:
        """To our handler once logging is set up; before that, to stderr in the format the
        environment asks for."""
        ours = [h for h in logging.getLogger().handlers if isinstance(h, _Handler)]
        if ours:
            ours[0].handle(record)
            return
        fmt = os.environ.get("WINGMAN_LOG_FORMAT", "").strip().lower()
        formatter: logging.Formatter = (JsonFormatter(component) if fmt == "json"
                                        else TextFormatter(component))
        sys.stderr.write(formatter.format(record) + "\n")
        sys.stderr.flush()

    def hook(exc_type: type[BaseException], exc: BaseException,
             tb: TracebackType | None, *, what: str = "the process") -> None:
        try:
            try:
                said = str(exc)
            except Exception:  # noqa: BLE001 - its message fails: its traceback still tells
                said = "<exception str() failed>"  # (as Python's own hook says)
            record = logging.LogRecord(
                "wingman.crash", logging.ERROR, __file__, 0,
                "%s stopped on an error nothing handled: %s: %s",
                (what, exc_type.__name__, scrubbed_cut(said, CRASH_MESSAGE_MAX)),
                (exc_type, exc, tb))
            record.event = "UncaughtException"
            emit(record)
        except Exception:  # noqa: BLE001 - the last word: a line that cannot forge a record
            sys.stderr.write(f"uncaught {exc_type.__name__}; its record could not be "
                             "written\n")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if issubclass(args.exc_type, SystemExit):  # as Python's own: a thread's quiet end
            return
        value = args.exc_value  # None only when raised without one: name the type then
        hook(args.exc_type, value if value is not None else RuntimeError(
            args.exc_type.__name__), args.exc_traceback,
             what=f"thread {args.thread.name if args.thread is not None else '?'}")

    def unraisable_hook(args: Any) -> None:  # sys.UnraisableHookArgs
        # an error Python can only report (in a __del__, a generator's or a coroutine's
        # finalization, ...): its own hook prints "Exception ignored in: ..." and a traceback
        # on stderr as they are; here one record, and the process goes on as there
        try:
            try:
                said = str(args.exc_value) if args.exc_value is not None else ""
            except Exception:  # noqa: BLE001 - its message fails: its type still tells
                said = "<exception str() failed>"
            try:
                where = repr(args.object) if args.object is not None else "?"
            except Exception:  # noqa: BLE001
                where = "<object repr() failed>"
            record = logging.LogRecord(
                "wingman.crash", logging.WARNING, __file__, 0, "%s %s: %s: %s",
                (args.err_msg or "Exception ignored in", scrubbed_cut(where, CRASH_MESSAGE_MAX),
                 args.exc_type.__name__, scrubbed_cut(said, CRASH_MESSAGE_MAX)),
                (args.exc_type, args.exc_value, args.exc_traceback)
                if args.exc_value is not None else None)
            record.event = "UnraisableException"
            emit(record)
        except Exception:  # noqa: BLE001 - the last word: a line that cannot forge a record
            sys.stderr.write(f"ignored {args.exc_type.__name__}; its record could not be "
                             "written\n")

    sys.excepthook = hook
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook


def looks_like_token(text: str) -> bool:
    """True when ``text`` holds a JWT (``eyJ<seg>.<seg>.``) or the encoding of text that does
    (how a Secret's ``data``, a kubeconfig or a ``.dockerconfigjson`` carries a token), in
    linear time: such text is never written to the audit trail (``wingman.audit``), and the
    client refuses it in what it would write into an object, where everyone who may read the
    object would read it.

    Found: a JWT whose segments are in either base64 alphabet, padded or not, ``/`` written as
    JSON may escape it (``\\/``), a JWE among them (five segments, its encrypted key empty or
    not); and the base64 of text holding one, in either alphabet, at any
    alignment, on one line or wrapped over several (at any column, LF or CRLF, the lines
    indented or not, the line breaks JSON-escaped or not), that text ASCII, UTF-8 or UTF-16
    (either byte order, with a BOM or not), or itself the base64 of such text (a
    ``.dockerconfigjson`` whose ``auth`` encodes ``user:<token>``, as a Secret's ``data``).
    Two levels of base64 are decoded, no more: each reads every character a bounded number of
    times.

    Disguised as it may be pasted or copied: characters that render as nothing
    (``_INVISIBLE``: a zero-width space, a joiner, a soft hyphen, a BOM) are not read, in the
    token or in its base64; and a JWT broken by blanks (:func:`_broken_jwt_in`: wrapped over
    lines at any column by any line break, escaped as a JSON log writes it or not, or spaced
    at its dots) is read joined. The same inside what base64 decodes to, as long as one of
    its ``eyJ`` (its header's or its claims') is whole there: what the encoding is
    recognised by."""
    if text.isascii():
        if not _may_hold(text, _MAX_DEPTH):  # nor, without its blanks, a broken ``eyJ``
            return False
    elif _may_hold(text, _MAX_DEPTH, unseen=True):  # cheaper than removing them first
        text = _INVISIBLE.sub("", text)
    else:
        return False
    return _holds(text, 0)


#: What a JWT's segments are written with: either base64 alphabet (dots between segments).
_SEGMENT = "A-Za-z0-9_+/-"
#: What follows ``eyJ`` in a JWT: the rest of its segment, a dot, a next segment, a dot; or,
#: in a JWE whose key is empty (``"alg":"dir"``), two dots and two segments, each with a dot.
_JWT_TAIL = re.compile(rf"([{_SEGMENT}]++)\.(?:[{_SEGMENT}]++|\.[{_SEGMENT}]++\.[{_SEGMENT}]++)\.")
#: After a first segment joined from pieces, what makes it a token's: a second segment that
#: begins as a JWT's claims do (``eyJ``: a JSON object), or the four segments of a JWE (its
#: encrypted key, empty or not, its IV, its ciphertext, its tag): the IV of at least 12 bytes
#: (16 characters) and the tag of at least 16 (22), as every JWE algorithm writes them, so
#: that one-word sentences after a word of base64 JSON are not read as them.
_AFTER_HEADER = re.compile(
    rf"\.(?:eyJ|[{_SEGMENT}]*+\.[{_SEGMENT}]{{16}}[{_SEGMENT}]*+\.[{_SEGMENT}]++"
    rf"\.[{_SEGMENT}]{{22}})")
_SEGMENT_REST = re.compile(rf"[{_SEGMENT}]*+")
#: A segment's base64 padding (``eyJhbGc=.eyJzdWI=.sig``), dropped before a JWT is looked
#: for; only the first ``=`` of a row is tried, so a long row is read once.
_SEGMENT_PADDING = re.compile(r"(?<!=)=++(?=\.)")
#: A run of what a JWT may be written with in text (its padding, JSON's ``\/``), and an
#: ``=`` in it that pads no segment (``A=eyJ...``): where redacting cuts a run.
_PLAIN_RUN = re.compile(r"(?:[A-Za-z0-9_.+/=-]|\\/)++")
_NOT_PADDING = re.compile(r"((?<!=)=++(?!\.))")


def _jwt_in(text: str, *, header: bool = False) -> bool:
    """Whether ``text`` holds ``eyJ<seg>.<seg>.``, its segments in either base64 alphabet,
    padded or not, ``/`` JSON-escaped or not. Any other character ends a segment: a line break
    too, so ``A=eyJ...==`` on one line and a host name on the next (an env file) is no token;
    nor is random binary that holds ``eyJ`` and dots with other bytes between them. A first
    segment written with ``+`` or ``/`` must read as a header does (:func:`_reads_as_header`):
    a path or a URL holding ``eyJ`` (``/var/cache/eyJ0/archive.tar.gz``) is no token, though a
    token after it in the same run (``/cache/eyJ0/eyJhbGci...``) is. Linear: an ``eyJ`` whose
    tail fails skips the rest of its segment, where any later one fails alike; where the tail
    holds, each ``eyJ`` of the first segment is judged by a bounded read of its header. With
    ``header`` (text joined from pieces), every first segment must read as a header, and the
    second begin as a JWT's claims do (``eyJ``: a JSON object), or four segments follow it
    (a JWE, whose header declares its ``enc``: :func:`_jwe_header`)."""
    if "eyJ" not in text:
        return False
    if "\\/" in text:
        text = text.replace("\\/", "/")
    if "=." in text:
        text = _SEGMENT_PADDING.sub("", text)
    at = text.find("eyJ")
    while at != -1:
        tail = _JWT_TAIL.match(text, at + 3)
        if tail is None:
            rest = _SEGMENT_REST.match(text, at + 3)
            at = text.find("eyJ", rest.end() if rest else at + 3)
            continue
        # the tail holds for each eyJ of this first segment: each is a token's start if no + or
        # / follows it in the segment, or if what follows reads as a header
        end = tail.end(1)
        special = max(text.rfind("+", at, end), text.rfind("/", at, end))
        after = _AFTER_HEADER.match(text, end) if header else None
        claims = after is not None and text.startswith("eyJ", end + 1)
        while at != -1 and (not header or after is not None):
            if ((at > special and not header)
                    or (_reads_as_header(text[at:min(end, at + _HEADER_READ)])
                        and (claims or not header or (end - at <= _JWE_HEADER_READ
                                                      and _jwe_header(text[at:end]))))):
                return True
            at = text.find("eyJ", at + 3, end - 1)  # one with a character after it
        at = text.find("eyJ", end)
    return False


#: How much of a first segment is read to judge whether it is a header: 18 bytes.
_HEADER_READ = 24


def _reads_as_header(segment: str) -> bool:
    """Whether the first segment ``segment`` (``eyJ`` on, at most ``_HEADER_READ`` of it)
    decodes to what a JWT's header is: at least ``{"alg":"none"`` long, printable ASCII (JSON,
    its blanks and line breaks too) as far as it makes bytes; random text such as a
    path's next directory decodes to bytes no header holds."""
    body = segment.translate(_TO_STANDARD)
    body = body[: len(body) - (len(body) % 4 == 1)]  # a last group of one character is no byte
    body += "=" * (-len(body) % 4)  # of two or three, one or two: ``{"alg":"none"}`` is 19
    try:
        data = binascii.a2b_base64(body)
    except binascii.Error:
        return False
    if data.translate(None, _PRINTABLE):
        return False
    # shorter than ``{"alg":"none"}``, yet a whole JSON object naming its algorithm (a
    # segment shorter than what is read is read whole): ``{"alg":"x"}``, as a token made up for
    # a test is, is a token all the same; a short object without ``alg`` (``{"a":1}``) is none,
    # as a JWT library refuses it: base64 JSON values ending sentences are ordinary text
    return len(data) >= _SHORTEST_HEADER or (
        data.endswith(b"}") and b'"alg"' in data and _json_object(data))


def _json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


#: How much of a first segment is read, at most, for whether it is a JWE's header.
_JWE_HEADER_READ = 256


def _jwe_header(segment: str) -> bool:
    """Whether the first segment ``segment`` (``eyJ`` on, whole) decodes to a JWE's header
    (its ``enc`` names how the content is encrypted, its ``alg`` how the key is): a first
    segment that reads as a header and four more segments may still be a word of base64 JSON
    and the words of the lines after it. Only a segment of at most ``_JWE_HEADER_READ``
    characters is read, so that the ``eyJ`` of one segment are each read a bounded length."""
    if len(segment) > _JWE_HEADER_READ:
        return False
    body = segment.translate(_TO_STANDARD)
    body = body[: len(body) - (len(body) % 4 == 1)]
    body += "=" * (-len(body) % 4)
    try:
        data = binascii.a2b_base64(body)
    except binascii.Error:
        return False
    return b'"enc"' in data and b'"alg"' in data


#: The bytes of printable ASCII.
_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\r\n"
#: The shortest header a JWT has, ``{"alg":"none"}`` but its last brace, in bytes.
_SHORTEST_HEADER = len(b'{"alg":"none"')

def _any_of(words: Iterable[str]) -> str:
    """The source of one pattern that finds any of ``words``, as a tree of their common
    beginnings: a search tries one branch per character, where an alternation of the words
    would try each of them at each position (hundreds, for the marks below)."""
    tree: dict[str | None, Any] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[None] = {}  # a word ends here: what follows it no longer matters

    def branch(node: dict[str | None, Any]) -> str:
        if None in node:
            return ""
        parts = [re.escape(char) + branch(node[char])
                 for char in sorted(c for c in node if c is not None)]
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
    return branch(tree) if tree else "(?!)"  # no word: a pattern that finds nothing


#: What renders as nothing, so that it may sit inside a token pasted or copied without showing
#: (``eyJhbG\u200bciOi...`` reads as ``eyJhbGciOi...``): Unicode's format characters (category
#: Cf: the zero-width space, non-joiner and joiner, the word joiner and the invisible operators,
#: the soft hyphen, the BOM, the bidirectional controls, the tags, the interlinear annotation
#: controls, the Egyptian, shorthand and musical format controls, U+13439-U+1343F from Unicode
#: 15 on) and Unicode's other default-ignorable code points (``wingman.model.text``'s: the
#: combining grapheme joiner, the Hangul fillers, the variation selectors). Removed before a
#: token is looked for; tests/unit/test_logs.py checks it holds every Cf character Python knows.
_INVISIBLE_CLASS = (
    "[\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5"
    "\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
    "\ufff0-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")
_INVISIBLE = re.compile(f"{_INVISIBLE_CLASS}++")
#: A blank on a line: the space, the tab and Unicode's other spaces (no-break, en, em, thin,
#: narrow no-break, ideographic, ...: category Zs); or a tab escaped as a JSON log line
#: writes it (``\\t``).
_BLANK = (r"(?:[ \t\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]|\\\\?(?:t|u00(?:09|20)|"
          r"u(?i:00a0|1680|200[0-9a]|202f|205f|3000)|x(?i:a0)))")
#: A line break: LF, CRLF or CR, and every other character ``str.splitlines`` breaks a line at
#: (the vertical tab, the form feed, the file, group and record separators, NEL, Unicode's line
#: and paragraph separators); or one of them escaped as a JSON log line or this module's text
#: lines write it (``\\n``, ``\\r\\n``, ``\\f``, ``\\u2028``, ``\\x0b``): a token copied from any
#: of them is broken there as by a line's end.
_ESCAPE = r"\\\\?"  # one backslash, or two: a JSON text's escape inside a JSON log line
_ESCAPED_CODE = (r"u(?:00(?:0[abcABC]|1[c-eC-E]|85)|202[89])|x(?:0[a-cA-C]|1[c-eC-E]|85)"
                 rf"|u000[dD](?:{_ESCAPE}u000[aA])?+|x0[dD](?:{_ESCAPE}x0[aA])?+")
#: A character that renders as nothing (``_INVISIBLE``) escaped as JSON writes it
#: (``\\u200b``, ``\\u00ad``; ``json.dumps`` does by default), either case of hex digits:
#: read as nothing too. (Those beyond the BMP, written as two escaped surrogates, are not.)
_ESCAPED_INVISIBLE = rf"{_ESCAPE}(?:u(?i:" + _any_of(
    f"{code:04x}" for code in range(0x10000) if _INVISIBLE.fullmatch(chr(code))) + \
    ")|x(?i:" + _any_of(  # (as Python's repr writes those below U+0100: ``\xad``)
        f"{code:02x}" for code in range(0x100) if _INVISIBLE.fullmatch(chr(code))) + "))"
_UNSEEN = rf"(?:{_INVISIBLE_CLASS}|{_ESCAPED_INVISIBLE})"
_ESCAPED_UNSEEN = re.compile(rf"(?:{_ESCAPED_INVISIBLE})++")
_ANY_UNSEEN = re.compile(rf"{_UNSEEN}++")
_LINE_BREAK = (r"(?:\r\n?|[\n\v\f\x1c-\x1e\x85\u2028\u2029]"
               rf"|{_ESCAPE}(?:r(?:{_ESCAPE}n)?+|[nf]|{_ESCAPED_CODE}))")
#: A line break and the blanks around it (the next line indented, or a blank left before the
#: break).
_BREAK = rf"{_BLANK}*+{_LINE_BREAK}{_BLANK}*+"
#: Where a JWT copied from a terminal, a mail or a wrapped document is broken: one line break
#: between two of its characters (its dots too), at any column; blanks before or after one of its
#: dots (``eyJhbGciOiJIUzI1NiJ9. eyJzdWIi...``). Dropped, these give the token back; blanks
#: inside a segment, or two line breaks in a row (a paragraph), are no such break.
_JWT_GAP = re.compile(rf"(?<=[.{_SEGMENT}]){_BREAK}(?=[.{_SEGMENT}])"
                      rf"|(?<=\.){_BLANK}++(?=[.{_SEGMENT}])|(?<=[{_SEGMENT}]){_BLANK}++(?=\.)")
#: A run of what a disguised token is written with: its characters, the invisible ones among
#: them, and the breaks ``_JWT_GAP`` reads through (a line break between two of them, blanks
#: beside a dot). What :func:`redact_tokens` replaces when a token is found only so. A run
#: starts with no blank, so a row of blanks is read once.
_DISGUISED_RUN = re.compile(
    rf"(?:[.{_SEGMENT}]|{_UNSEEN})"
    rf"(?:[.{_SEGMENT}]|{_UNSEEN}|{_BREAK}(?=[.{_SEGMENT}]|{_UNSEEN})"
    rf"|(?<=\.){_BLANK}++(?=[.{_SEGMENT}]|{_UNSEEN})|{_BLANK}++(?=\.))*+")
#: ``eyJ`` with a line break inside it: a JWT wrapped at its second or third column.
_BROKEN_EYJ = re.compile(rf"e(?:{_BREAK})?y(?:{_BREAK})?J")
#: What may stand between two letters of a disguised token: invisible characters, one line
#: break among them.
_BETWEEN = rf"{_UNSEEN}*+(?:{_BREAK}{_UNSEEN}*+)?+"


def _broken_jwt_in(text: str) -> bool:
    """Whether ``text`` holds a JWT broken by blanks (``_JWT_GAP``): wrapped over lines, at any
    column, by any line break (``_LINE_BREAK``), the next lines indented or not; or spaced at
    its dots. Read joined, and only a first segment that reads as a header
    (:func:`_reads_as_header`: a whole JSON object naming ``alg``, when shorter than
    ``{"alg":"none"}``) before claims (``eyJ``), or a JWE's header before its four segments, counts:
    joined, the words of prose (an ``eyJ`` word, then one-word sentences: ``eyJob. Done.
    Next.``) or of lines (base64 JSON, then a host name on the next line) would otherwise read
    as segments. Text without ``eyJ``, broken or not, is not read further, nor what is before
    its first ``eyJ``. :func:`looks_like_token` calls it
    only for text that :func:`_may_hold` a token (an audit record's words do not)."""
    found = _BROKEN_EYJ.search(text)
    if found is None:
        return False
    text = text[found.start():]
    joined = _JWT_GAP.sub("", text)
    return joined != text and _jwt_in(joined, header=True)


def _encoded_marks(pattern: bytes) -> tuple[str, ...]:
    """What the base64 of bytes holding ``pattern`` always holds, wherever the pattern starts
    in a group of three bytes: the characters that depend on its bytes alone (the same whether
    the bytes around it are all zeros or all ones)."""
    marks = []
    for shift in range(3):
        zeros = base64.b64encode(bytes(shift) + pattern + bytes(4)).decode()
        ones = base64.b64encode(b"\xff" * shift + pattern + b"\xff" * 4).decode()
        same = "".join(z if z == o else " " for z, o in zip(zeros, ones, strict=True))
        marks.append(max(same.split(), key=len))
    return tuple(marks)


#: What the base64 of text holding ``eyJ`` always contains (``ZXlK``, ``V5S``, ``leU``), and
#: of UTF-16 text holding it (``e\0y\0J`` is in either byte order); none holds ``+/-_``, so
#: they read the same in both alphabets.
_EYJ_ENCODED = _encoded_marks(b"eyJ") + _encoded_marks(b"e\0y\0J")
#: What base64 of base64 holding ``eyJ`` always contains (of either form of those marks), the
#: inner base64 on one line or wrapped over several, a line break (LF or CRLF) anywhere in the
#: mark (``base64 | base64``: the inner lines are 76 characters).
_EYJ_ENCODED_TWICE = tuple(dict.fromkeys(
    twice for mark in _EYJ_ENCODED
    for form in (mark, *(mark[:i] + brk + mark[i:] for i in range(1, len(mark))
                         for brk in ("\n", "\r\n")))
    for twice in _encoded_marks(form.encode()) + _encoded_marks("\0".join(form).encode())))
#: How many times base64 is decoded, at most, to find a token inside (base64 of base64: a
#: ``.dockerconfigjson`` as a Secret's ``data``); each level decodes what the one before
#: decoded at most four times (one per alignment), so the cost stays linear.
_MAX_DEPTH = 2
#: What text that ``n`` more levels of decoding could find a token in always holds: the
#: encoded ``eyJ`` for one level, and its encoding for two.
_MARKS: tuple[tuple[str, ...], ...] = ((), _EYJ_ENCODED, _EYJ_ENCODED + _EYJ_ENCODED_TWICE)
#: The same in UTF-16 text read a byte a character (``e\0y\0J`` for none).
_UTF16_MARKS = tuple(("e\0y\0J", *("\0".join(mark) for mark in marks)) for marks in _MARKS)
#: A run of either base64 alphabet long enough to encode ``eyJ<seg>.<seg>.``.
_B64_ANY_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}")
#: A line break inside base64 (an encoder wraps it: the ``base64`` tool at 76 columns, PEM at
#: 64), and the indentation after it (YAML's), or the blanks before it: dropped, so that the
#: lines are read as the one encoding they are. CR and JSON's escaped ``\\n`` and ``\\r``
#: are read as LF first. (Each pattern starts with what it needs, so that it is not tried at
#: every character, and a row of blanks is read from its first.)
_WRAP = re.compile(r"\n[ \t]*+")
_BLANKS_BEFORE_BREAK = re.compile(r"[ \t](?<![ \t][ \t])[ \t]*+(?=\n)")
#: A block of base64 as it is written, wrapped or not: what ``redact_tokens`` replaces.
_B64_BLOCK_CHAR = r"(?:[A-Za-z0-9+/_-]|\\/)"
_B64_BLOCK = re.compile(rf"{_B64_BLOCK_CHAR}++"
                        rf"(?:(?:[ \t]*+(?:[\r\n]|\\[rn])[ \t]*+)++{_B64_BLOCK_CHAR}++)*+")
_TO_STANDARD = str.maketrans("-_", "+/")
#: What :func:`_may_hold` reads text without: blanks, line breaks (``_LINE_BREAK``'s in
#: ASCII), NUL; and when asked for what it holds unseen, every byte of a character beyond
#: ASCII too (in latin-1 or UTF-8: NEL and Unicode's line separators among them).
_SQUEEZED_BYTES = b" \t\r\n\v\f\x1c\x1d\x1e\0"
_UNSEEN_BYTES = _SQUEEZED_BYTES + bytes(range(0x80, 0x100))
#: A line break escaped (``_LINE_BREAK``'s), read as one by :func:`_may_hold`; an invisible
#: character escaped, read as nothing.
_ESCAPED_BREAK = re.compile(
    rf"{_ESCAPE}(?:[rnf]|{_ESCAPED_CODE})|{_ESCAPED_INVISIBLE}".encode("ascii"))


#: ``_MARKS`` as patterns over text (``_encoded_jwt``) and over bytes (``_may_hold``; the
#: marks are ASCII, so their bytes are their characters: ``encode`` refuses any other), and
#: ``_UTF16_MARKS`` over text (``_views``).
_MARKS_FOUND_TEXT = tuple(re.compile(_any_of(marks)) for marks in _MARKS)
_MARKS_FOUND = tuple(re.compile(found.pattern.encode("ascii")) for found in _MARKS_FOUND_TEXT)
_UTF16_FOUND = tuple(re.compile(_any_of(marks)) for marks in _UTF16_MARKS)


def _views(text: str, left: int) -> Iterator[str]:
    """``text``, and when it is UTF-16 (its bytes read as characters: ``e\\0y\\0J``) holding
    what ``left`` more levels of decoding would find a token by, each of its two byte columns:
    one of them is its ASCII characters, in either byte order, with a BOM or not."""
    yield text
    if "\0" in text and _UTF16_FOUND[left].search(
            text.replace("\0\r", "").replace("\0\n", "")) is not None:
        yield text[0::2]
        yield text[1::2]


def _holds(text: str, depth: int) -> bool:
    """Whether ``text`` (``depth`` levels of base64 already decoded) holds a JWT, itself or
    in UTF-16, whole or broken by blanks (:func:`_broken_jwt_in`), or (below ``_MAX_DEPTH``)
    base64 that decodes to text that does. Decoded text beyond ASCII is read as UTF-8 too,
    without what renders as nothing (``_INVISIBLE``): a token disguised as it may be pasted
    is disguised the same inside what was encoded."""
    left = _MAX_DEPTH - depth
    plain = text.isascii()
    if not _may_hold(text, left, unseen=not plain):
        return False
    if "\\u" in text or "\\x" in text:  # an invisible character as JSON (or Python's repr)
        text = _ESCAPED_UNSEEN.sub("", text)  # escapes it is read as nothing too
    views: Iterable[str] = _views(text, left)
    if depth and not plain:
        views = itertools.chain(views, _utf8_read(text))
    return any(_jwt_in(view) or (left > 0 and _encoded_jwt(view, depth)) or _broken_jwt_in(view)
               for view in views)


def _utf8_read(decoded: str) -> Iterator[str]:
    """Decoded bytes (read a byte a character) read as UTF-8, without what renders as nothing:
    the line separators and NEL UTF-8 writes in two or three bytes are then breaks, and an
    invisible character no longer splits a segment."""
    yield _INVISIBLE.sub("", decoded.encode("latin-1").decode("utf-8", "replace"))


def _may_hold(text: str, left: int, *, unseen: bool = False) -> bool:
    """Whether ``text`` may hold ``eyJ`` or a mark ``left`` more levels of decoding would
    find a token by, read with every blank, line break (escaped too) and NUL removed: that
    holds each one a view of it (:func:`_views`) or its lines joined (:func:`_unwrapped`)
    would show. A few passes over its bytes, cheaper than joining the lines by patterns or
    looking for every mark in UTF-16 (decoded binary is full of line breaks and NULs). With
    ``unseen``, read without any character beyond ASCII too: what it holds once the characters
    that render as nothing (``_INVISIBLE``) and the other blanks are removed."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    if b"\\" in raw:  # JSON's escaped line breaks, as _unwrapped reads them
        raw = _ESCAPED_BREAK.sub(b"\n", raw)
    squeezed = raw.translate(None, _UNSEEN_BYTES if unseen else _SQUEEZED_BYTES)
    return b"eyJ" in squeezed or (left > 0 and _MARKS_FOUND[left].search(squeezed) is not None)


def _unwrapped(text: str) -> str:
    """``text`` with JSON's ``\\/`` read as ``/`` and the line breaks of base64 wrapped over
    lines dropped (with the blanks around them). Joining lines that are not base64 only joins
    words: what is decoded must still decode to a token."""
    if "\\" in text:
        text = text.replace("\\/", "/").replace("\\r", "\n").replace("\\n", "\n")
    if "\r" in text:
        text = text.replace("\r", "\n")
    if "\n" not in text:
        return text
    if " \n" in text or "\t\n" in text:
        text = _BLANKS_BEFORE_BREAK.sub("", text)
    if "\n " in text or "\n\t" in text:
        return _WRAP.sub("", text)
    return text.replace("\n", "")


def _encoded_jwt(text: str, depth: int) -> bool:
    """Whether a base64 run of ``text`` (its lines joined where wrapped) decodes to text
    holding a JWT. Only runs holding an encoded ``eyJ`` are decoded (:func:`_may_hold` tells
    first whether there is any), and runs are disjoint, so the cost stays linear."""
    text = _unwrapped(text)
    marks = _MARKS_FOUND_TEXT[_MAX_DEPTH - depth]
    return marks.search(text) is not None and any(
        _encodes_jwt(match.group(), depth, marks) for match in _B64_ANY_RUN.finditer(text))


def _encodes_jwt(run: str, depth: int, marks: re.Pattern[str]) -> bool:
    """Whether the base64 run ``run`` (either alphabet, no line breaks) decodes, at one of its
    four alignments, to text holding a JWT (:func:`_holds`, a level deeper). Only a run holding
    an encoded ``eyJ`` is decoded: random bytes (a binary's output, a digest) hold ``eyJ`` and
    dots about once in every few megabytes, and are not a token for that (:func:`_jwt_in`)."""
    if marks.search(run) is None:
        return False
    body = run.translate(_TO_STANDARD)
    for skip in range(4):
        part = body[skip:]
        # the last group, when short, is what the encoder padded (its ``=`` is not in the
        # run): of two or three characters, the last one or two bytes, an unsigned token's
        # final dot among them; of one, no byte
        short = len(part) % 4
        part = part[:len(part) - 1] if short == 1 else part + "=" * (-short % 4)
        try:
            data = binascii.a2b_base64(part)
        except binascii.Error:  # not for a run of the alphabet a whole number of groups long
            continue
        if _holds(data.decode("latin-1"), depth + 1):
            return True
    return False


def _redact_plain(match: re.Match[str]) -> str:
    run = match.group()
    if "eyJ" not in run:
        return run
    parts = _NOT_PADDING.split(run)  # the JWTs' parts, and the ``=`` between them
    return "".join(_redacted_part(part) if i % 2 == 0 else part
                   for i, part in enumerate(parts))


def _redacted_part(part: str) -> str:
    """``part`` of a run replaced when it holds a JWT; the dots after its signature (a
    sentence's end: ``<token>. thanks``) kept, unless the token needs them (an unsigned one
    ends with its second dot)."""
    if not _jwt_in(part):
        return part
    token = part.rstrip(".")
    return REDACTED + part[len(token):] if token != part and _jwt_in(token) else REDACTED


def _redact_block(match: re.Match[str]) -> str:
    block = match.group()
    return REDACTED if len(block) >= 12 and _encoded_jwt(block, 0) else block


def redact_tokens(text: str) -> str:
    """``text`` with each part :func:`looks_like_token` finds replaced by ``[REDACTED]``: a run
    holding a JWT (an ``=`` in it that pads no segment is kept: ``token=[REDACTED]``), and a
    block of base64 (its lines, when wrapped; a run of base64 letters on a line joined to it
    goes with it, its trailing ``=`` stays) of text holding one. For text quoting what a
    person typed (a request name that is a JWT pasted in), so that it can be shown and audited
    without the token; should a part still be found (text in UTF-16 as it is, say), the whole
    is withheld. A token found only read without invisible characters or joined at its breaks
    (:func:`looks_like_token`) goes with what it is written with, from its ``eyJ`` to its last
    segment's end (``_DISGUISED_RUN``, :func:`_redact_disguised`): the words a break or a blank
    beside a dot joins before or after it stay. Linear, like the detector."""
    text = _redacted(text)
    return "(a token-shaped text, not shown)" if looks_like_token(text) else text


def _redacted(text: str) -> str:
    """``text`` with what :func:`redact_tokens` replaces replaced, what it cannot tell apart
    kept."""
    if "eyJ" in text:
        text = _PLAIN_RUN.sub(_redact_plain, text)
    if _encoded_jwt(text, 0):
        text = _B64_BLOCK.sub(_redact_block, text)
    if not looks_like_token(text):
        return text
    return _DISGUISED_RUN.sub(_redact_disguised, text)


def _redact_disguised(match: re.Match[str]) -> str:
    """The run with each token in it replaced, from its ``eyJ`` to the end of its last segment
    (:func:`_token_end`): the words a break or a blank beside a dot joined before it or after
    it are kept (``<token>.\nthanks. bye``). Whole when what is left still holds one (a token
    in its base64, found by no ``eyJ``). Each ``eyJ`` is read to at most five dots after it,
    and the next looked for after its first segment at least, so the cost stays linear."""
    run = match.group()
    if not looks_like_token(run):
        return run
    kept: list[str] = []
    done = at = 0
    while (found := _HIDDEN_EYJ.search(run, at)) is not None:
        start = found.start()
        end, first_dot, header = _token_end(run, start)
        candidate = run[start:end]
        # what is left of a token is disguised (plain ones are gone): joined, it has a header;
        # or it holds invisible characters. Else the whole check need not be made
        if ((_reads_as_header(header[:_HEADER_READ]) or _ANY_UNSEEN.search(candidate))
                and looks_like_token(candidate)):
            kept += [run[done:start], REDACTED]
            done = at = end
        else:
            at = first_dot + 1 if first_dot != -1 else end
    kept.append(run[done:])
    redacted = "".join(kept)
    return REDACTED if done == 0 or looks_like_token(redacted) else redacted


#: ``eyJ`` as a disguised token may write it: a line break or invisible characters between its
#: letters.
_HIDDEN_EYJ = re.compile(rf"e{_BETWEEN}y{_BETWEEN}J")
#: A line break or a tab escaped (``_LINE_BREAK``'s, ``_BLANK``'s) at the end of what is
#: searched.
_ESCAPED_BREAK_AT_END = re.compile(
    rf"{_ESCAPE}(?:r(?:{_ESCAPE}n)?+|[nft]|u00(?:09|20)|u(?i:00a0|1680|200[0-9a]|202f|205f|"
    rf"3000)|x(?i:a0)|{_ESCAPED_CODE})\Z")
#: The blanks and (raw) line breaks a token's last segment may be followed by before a dot.
_GAP_CHARACTERS = " \t\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009" \
    "\u200a\u202f\u205f\u3000\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def _token_end(run: str, start: int) -> tuple[int, int, str]:
    """Where the disguised token whose ``eyJ`` is at ``start`` in ``run`` ends, where its
    first dot is (-1: none), and its first segment read joined (its first
    ``2 * _JWE_HEADER_READ`` characters): it ends before the dot after its third segment (a
    JWS: header, claims, signature), or after its fifth (a JWE, whose header names its
    ``enc``), and before the blanks or the line break before that dot; at the run's end when
    it has fewer dots."""
    dots: list[int] = []
    at = start
    while len(dots) < 5 and (at := run.find(".", at)) != -1:
        dots.append(at)
        at += 1
    if not dots:
        return len(run), -1, ""
    # the header read with its dot, so that a break or blanks before the dot are read as one
    piece = run[start:min(dots[0] + 1, start + 2 * _JWE_HEADER_READ)]
    header = _JWT_GAP.sub("", _ANY_UNSEEN.sub("", piece)).removesuffix(".")
    last = 4 if _jwe_header(header) else 2
    end = dots[last] if len(dots) > last else len(run)
    while True:  # a break or blanks before the dot, at most one line break: no segment's
        end = start + len(run[start:end].rstrip(_GAP_CHARACTERS))
        escaped = _ESCAPED_BREAK_AT_END.search(run, max(start, end - 16), end)
        if escaped is None:
            return end, dots[0], header
        end = escaped.start()


__all__ = ["CRASH_MESSAGE_MAX", "FORMATS", "LEVELS", "REDACTED", "JsonFormatter",
           "TextFormatter", "base64_readings", "forget", "holds_jwt", "install_excepthook",
           "looks_like_token", "never_log", "redact_tokens", "scrubbed_cut",
           "setup_logging"]
