"""Redaction of command output: what the gateway keeps of what a command printed.

Output is the target's, so hostile: every step runs in linear time (no regular expression can
backtrack) and the input is at most the gateway's output bound. Pure: the standard library only.

The steps, in order (``redact``):

1. **Clean.** Terminal escape sequences (ANSI CSI/OSC and the rest), other control characters
   except newline and tab, and invisible format characters (zero-width, bidirectional) are
   removed: they can hide a credential from the rules below, and from a person reading it.
2. **Known secrets** (the caller's: the capability token, the ServiceAccount token): every
   occurrence, also split across lines or spaces, and also base64- (any alignment), hex-,
   percent- or JSON-escaped.
3. **Structure.** Output of ``kubectl -o yaml|json`` (and kubeconfigs) is read line by line
   as YAML or JSON: every value in a Secret's ``data``/``stringData`` (and any base64 value in a
   ``data``/``binaryData`` block) whatever its key; the ``value`` of an environment entry whose
   ``name`` names a credential (``- name: DB_PASSWORD`` / ``value: ...``); a block scalar under
   a credential key; and the ``data``/``stringData`` of a Secret inside a one-line JSON (such as
   the ``last-applied-configuration`` annotation).
4. **Private keys**: PEM ``PRIVATE KEY`` blocks, up to their end (or the end of the output).
5. **Encoded tokens**: base64 or hex runs and percent-encoded words that decode to a JWT or a
   private key.
6. **Text rules**: JWT-shaped strings (also a JWT cut short, and its continuation lines when
   wrapped); ``Authorization:`` header values (Bearer, Basic, any scheme) and ``Bearer``/
   ``Basic`` credentials; the password in a URL (``scheme://user:PASSWORD@host``); the value of
   a key that names a credential (``password``, ``pwd``, ``passphrase``, ``secret``, ``token``,
   ``api_key``, ``client-key-data``, ``private_key``, ``credentials``, ``cookie``, ...), quoted
   values whole (spaces included); and the value of a command-line flag that names one
   (``-p VALUE``, ``--password=VALUE``, ``--token VALUE``).

What redaction cannot promise is documented in docs/architecture.md ("Command output:
redaction and its limits"): it recognises credentials by shape and by name, so a secret with
neither (a bare word in a free-form log line, or one encoded in a way not listed here) is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Sequence

REDACTED = "[REDACTED]"
_ALREADY = REDACTED[:-1]  # what a rule sees of a value redacted before it (no closing bracket)

# ---------------------------------------------------------------------------------- cleaning

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*+[ -/]*+[@-~]"            # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]*+(?:\x07|\x1b\\)?"  # OSC: titles, hyperlinks
    r"|\x1b[PX^_][^\x1b]*+(?:\x1b\\)?"       # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*+[0-~]?"                    # other escapes (and a lone ESC)
    r"|\x9b[0-?]*+[ -/]*+[@-~]"              # 8-bit CSI
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` without escape sequences, control characters (but newline and tab) and
    invisible format characters (zero-width, bidirectional: Unicode category Cf); carriage
    returns become newlines."""
    text = _ESCAPES.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub("", text)
    if not text.isascii():
        text = "".join(c for c in text if c.isascii() or unicodedata.category(c) != "Cf")
    return text


# ---------------------------------------------------------------------------------- spans


def _apply(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with each (start, end) span replaced by REDACTED (overlaps merged)."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return text
    out, last = [], 0
    for start, end in merged:
        out += [text[last:start], REDACTED]
        last = end
    out.append(text[last:])
    return "".join(out)


# ---------------------------------------------------------------------------------- known


def _base64_forms(data: bytes) -> set[str]:
    """How ``data`` appears inside any base64 stream, for each of the three alignments."""
    forms: set[str] = set()
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + data + b"\0\0").decode("ascii")
        first = -(-8 * k // 6)  # the first character made of the data's bits only
        last = (8 * (k + len(data))) // 6  # one past the last such character
        core = encoded[first:last]
        if len(core) >= 12:
            forms.add(core)
            forms.add(core.replace("+", "-").replace("/", "_"))
    return forms


def _forms(secret: str) -> set[str]:
    data = secret.encode("utf-8")
    forms = {secret, data.hex(), data.hex().upper(), urllib.parse.quote(secret, safe=""),
             json.dumps(secret)[1:-1]}
    forms |= _base64_forms(data)
    return {f for f in forms if len(f) >= 8 or f == secret}


def _redact_known(text: str, secrets: Iterable[str]) -> str:
    """Every occurrence of each secret (and its encodings), whitespace inside ignored."""
    wanted = {form for s in secrets if s for form in _forms(s)}
    wanted = {w for w in ("".join(f.split()) for f in wanted) if w}
    if not wanted:
        return text
    keep = [i for i, char in enumerate(text) if not char.isspace()]
    compact = "".join(text[i] for i in keep)
    spans = []
    for form in sorted(wanted, key=len, reverse=True):
        at = compact.find(form)
        while at != -1:
            spans.append((keep[at], keep[at + len(form) - 1] + 1))
            at = compact.find(form, at + len(form))
    return _apply(text, spans)


# ---------------------------------------------------------------------------------- names

_CREDENTIAL_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey",
                     "privatekey", "clientkey", "keydata", "accesskey", "credential",
                     "cookie", "sessionid", "authorization", "signingkey", "encryptionkey",
                     "connectionstring", "dsn")
_CREDENTIAL_SEGMENTS = frozenset({"pwd", "pass", "pw", "auth", "key", "sas", "otp", "pin"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# A last name segment saying the value is about a credential, not the credential itself.
_NOT_A_VALUE = frozenset({"id", "file", "path", "size", "type", "length", "count", "bits",
                          "ttl", "expiry", "expires", "expiration", "version", "mode"})
# Values that carry no secret whatever their key says (automountServiceAccountToken: true).
_NOT_SECRET_VALUES = frozenset({"true", "false", "yes", "no", "null", "none", "~", ""})


def credential_name(name: str) -> bool:
    """Whether a key, variable or flag name names a credential (``DB_PASSWORD``, ``apiKey``,
    ``client-key-data``, ``pwd``, ``x-auth-token``; not ``secretName`` or ``tokenizer``)."""
    plain = name.strip("\"'-").lower()
    if not plain or plain in ("key", "pin"):
        return False
    segments = [s for s in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", name.strip("\"'-")).lower())
                if s]
    if segments and segments[-1] in _NOT_A_VALUE:  # private_key_file: where, not what
        return False
    squashed = "".join(segments)
    if any(word in squashed for word in _CREDENTIAL_WORDS):
        return True
    return any(s in _CREDENTIAL_SEGMENTS for s in segments)


# ---------------------------------------------------------------------------------- structure

_YAML_KEY = re.compile(r"""^(?P<indent>[ ]*+)(?P<dash>-[ ]++)?(?P<key>"[^"]*+"|'[^']*+'|"""
                       r"""[^\s:#'"][^:#]*?)[ ]*+:(?:[ ]++(?P<value>.*+))?$""")
_JSON_PAIR = re.compile(r'"(?P<key>(?:[^"\\]|\\.)*+)"\s*+:\s*+'
                        r'(?P<value>"(?:[^"\\]|\\.)*+"?|\{|\[|[^\s,\]}]++)')
_BASE64_VALUE = re.compile(r"[A-Za-z0-9+/]{4,}+={0,2}")
_BLOCK_SCALAR = re.compile(r"[|>][-+0-9]*+\s*+(?:#.*+)?")
_SIZE_ONLY = re.compile(r"[0-9]++ bytes")
_SECRET_KIND = re.compile(r"""(?:^|[\s{,])"?kind"?\s*+:\s*+"?Secret\b""", re.MULTILINE)
_CONFIGMAP_KIND = re.compile(r"""(?:^|[\s{,])"?kind"?\s*+:\s*+"?ConfigMap\b""", re.MULTILINE)
_DATA_KEYS = ("data", "stringData", "binaryData")
_ENV_NAME = re.compile(r"""\bname["']?\s*+:\s*+["']?(?P<name>[A-Za-z0-9_.\-]++)""")
_ENV_VALUE = re.compile(r"""\bvalue["']?\s*+:\s*+(?P<value>.*+)$""")


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'" else key


def _value_span(line: str, start: int) -> tuple[int, int] | None:
    """The span of a scalar value that starts at ``start`` (quotes and a trailing comma kept
    outside), or None for an empty value, a flow collection or a block indicator."""
    end = len(line)
    value = line[start:end].rstrip()
    if not value or value[0] in "{[" or value.strip("\"',").lower() in _NOT_SECRET_VALUES:
        return None
    if _SIZE_ONLY.fullmatch(value):  # kubectl describe secret: "password:  16 bytes"
        return None
    if _BLOCK_SCALAR.fullmatch(value):
        return None
    if value.endswith(","):
        value = value[:-1].rstrip()
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        return start + 1, start + len(value) - 1
    if value[0] in "\"'":
        return start + 1, start + len(value)
    return start, start + len(value)


class _Structure:
    """Line-by-line reading of YAML and pretty JSON, collecting the spans to redact."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.secret_kind = bool(_SECRET_KIND.search(text))
        # only ConfigMaps: their data is plain configuration, read by the key rules
        self.configmaps_only = not self.secret_kind and bool(_CONFIGMAP_KIND.search(text))
        self.spans: list[tuple[int, int]] = []
        self.block: tuple[int, str] | None = None  # (indent, kind) of an open YAML block
        self.scalar_indent: int | None = None  # a block scalar under a credential key
        self.json_block: int | None = None  # nesting depth of an open JSON data object
        self.json_depth = 0
        self.env_pending = 0  # lines left to find the value of a credential env entry

    def run(self) -> list[tuple[int, int]]:
        offset = 0
        for line in self.text.split("\n"):
            self._line(line, offset)
            offset += len(line) + 1
        return self.spans

    def _add(self, base: int, span: tuple[int, int] | None) -> None:
        if span is not None and span[0] < span[1] and not self.text.startswith(
                _ALREADY, base + span[0]):
            self.spans.append((base + span[0], base + span[1]))

    def _secret_value(self, kind: str, value: str) -> bool:
        """Whether a value in a data block is redacted: always in a Secret (and in stringData);
        when the kind is unknown (output cut before it), when it looks like base64."""
        if kind == "stringData" or self.secret_kind:
            return True
        if self.configmaps_only and kind != "binaryData":
            return False
        raw = value.strip().strip(",").strip("\"'")
        return len(raw) >= 4 and _BASE64_VALUE.fullmatch(raw) is not None

    def _line(self, line: str, base: int) -> None:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        # a block scalar under a credential key: every more-indented line is its value
        if self.scalar_indent is not None:
            if stripped and indent <= self.scalar_indent:
                self.scalar_indent = None
            else:
                if stripped:
                    self._add(base, (indent, len(line.rstrip())))
                return
        self._json(line, base)
        if self._compact_json_secret(line, base):
            return
        match = _YAML_KEY.match(line)
        if self.block is not None and stripped and indent <= self.block[0] and not (
                match is None and stripped.startswith("- ") and indent == self.block[0]):
            self.block = None
        if self.block is not None and stripped and not stripped.startswith("#"):
            kind = self.block[1]
            if match is not None and match.group("value") is not None:
                value_at = match.start("value")
                if self._secret_value(kind, match.group("value")):
                    if _BLOCK_SCALAR.fullmatch(match.group("value").strip()):
                        self.scalar_indent = indent
                    else:
                        self._add(base, _value_span(line, value_at))
            elif match is not None and match.group("value") is None and (
                    kind == "stringData" or self.secret_kind):
                pass  # a nested mapping: its own lines are read next
            elif self._secret_value(kind, stripped.lstrip("- ")):
                first = len(line) - len(line.lstrip(" -"))
                self._add(base, _value_span(line, first))
            return
        if match is None:
            self._env(line, base)
            return
        key = _unquote(match.group("key").strip())
        value = match.group("value")
        key_indent = indent + (len(match.group("dash")) if match.group("dash") else 0)
        if key in _DATA_KEYS and (value is None or not value.strip()):
            self.block = (key_indent, key)
            return
        if value is not None and credential_name(key):
            if _BLOCK_SCALAR.fullmatch(value.strip()):
                self.scalar_indent = key_indent
            else:
                self._add(base, _value_span(line, match.start("value")))
            return
        self._env(line, base)

    def _env(self, line: str, base: int) -> None:
        """``name: DB_PASSWORD`` then, on this line or one of the next few, ``value: ...``."""
        named = _ENV_NAME.search(line)
        if named is not None and credential_name(named.group("name")):
            self.env_pending = 4
        if self.env_pending:
            value = _ENV_VALUE.search(line)
            if value is not None:
                raw = value.group("value")
                at = value.start("value")
                if _BLOCK_SCALAR.fullmatch(raw.strip()):
                    self.scalar_indent = len(line) - len(line.lstrip(" "))
                    self.env_pending = 0
                    return
                quoted = re.match(r'"(?:[^"\\]|\\.)*+"|\'[^\']*+\'', raw)
                if quoted is not None:
                    self._add(base, (at + 1, at + quoted.end() - 1))
                else:  # plain, or inside a flow mapping: up to the next ',' or '}'
                    cut = re.match(r"[^,}\]]*+", raw)
                    length = len(cut.group().rstrip()) if cut else 0
                    if raw[:length].strip().lower() not in _NOT_SECRET_VALUES:
                        self._add(base, (at, at + length))
                self.env_pending = 0
            else:
                self.env_pending -= 1

    def _json(self, line: str, base: int) -> None:
        """Pretty JSON: the string values of a ``"data": {`` object, to its closing brace."""
        opened = line.count("{") + line.count("[")
        closed = line.count("}") + line.count("]")
        if self.json_block is not None:
            pair = _JSON_PAIR.search(line)
            if pair is not None and pair.group("value").startswith('"') and \
                    self._secret_value("data", pair.group("value")):
                start = pair.start("value") + 1
                end = pair.end("value") - (1 if pair.group("value").endswith('"') and
                                            len(pair.group("value")) > 1 else 0)
                self._add(base, (start, end))
            self.json_depth += opened - closed
            if self.json_depth < self.json_block:
                self.json_block = None
            return
        pair = _JSON_PAIR.search(line)
        self.json_depth += opened - closed
        if pair is not None and pair.group("key") in _DATA_KEYS and pair.group("value") == "{" \
                and line.rstrip().endswith("{"):
            self.json_block = self.json_depth

    def _compact_json_secret(self, line: str, base: int) -> bool:
        """A one-line JSON Secret (``last-applied-configuration``): its data values."""
        if '"kind":"Secret"' not in line.replace(" ", ""):
            return False
        found = False
        opening = re.compile(r'"(?:data|stringData)"\s*+:\s*+\{')
        at = 0
        while (match := opening.search(line, at)) is not None:
            at = match.end()
            depth = 1
            while at < len(line) and depth:
                char = line[at]
                if char == '"':
                    string = re.match(r'"(?:[^"\\]|\\.)*+"?', line[at:])
                    assert string is not None
                    after = line[at + string.end():].lstrip()
                    if not after.startswith(":"):  # a value, not a key
                        self._add(base, (at + 1, at + string.end() - 1))
                        found = True
                    at += string.end()
                    continue
                depth += {"{": 1, "}": -1}.get(char, 0)
                at += 1
        return found


# ---------------------------------------------------------------------------------- text rules

_PEM = re.compile(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY[ A-Z]{0,20}-----"
                  r"(?:(?!-----END)[\s\S])*+"
                  r"(?:-----END[ A-Z0-9]{0,40}PRIVATE KEY[ A-Z]{0,20}-----)?")
_PEM_FAST = "PRIVATE KEY"
# A JWT (or the start of one cut off by the output bound): base64url JSON header "eyJ..."
# optionally followed by further dot-separated segments, and lines that continue it.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}+(?:\.[A-Za-z0-9_-]*+){0,4}+"
                     r"(?:\n[ \t]*+[A-Za-z0-9_.-]{8,}+(?=[ \t]*+(?:\n|$)))*+")
_AUTH_HEADER = re.compile(r"(?i)(\bauthorization[\"']?[ \t]*+[:=][ \t]*+[\"']?)"
                          r"(?!\[REDACTED\])([^\n\"']++)")
_BEARER_RE = re.compile(r"(?i)\b(bearer|token)([ \t]++)(?!\[REDACTED\])([^\s\"',;]++)")
_BASIC_RE = re.compile(r"(?i)\b(basic)([ \t]++)([A-Za-z0-9+/]{4,}+={0,2})")
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{0,30}+://)([^\s:/?#@\"'<>]*+):"
                           r"([^\s/?#@\"'<>]++)@")
_KEY_CHARS = r"[A-Za-z0-9_.-]"
# A key that may name a credential (``credential_name`` decides), then ':' or '=', then its
# value, quoted (whole, spaces included) or not. Linear time on any output: a key starts only
# where a key character does not precede it, the lookahead stays inside that one key, and the
# possessive quantifiers never backtrack.
_KEYVALUE_RE = re.compile(
    rf"(?i)(?<!{_KEY_CHARS})(?={_KEY_CHARS}*?(?:token|passw|pass|pwd|pw|secret|key|auth|"
    r"credential|cookie|session|dsn|pin|otp|sas))"
    rf"({_KEY_CHARS}++)([\"']?[ \t]*+[:=][ \t]*+)"
    r"(\"(?:[^\"\\\n]|\\.)*+\"?|'[^'\n]*+'?|[^\s\"',;}\]]++)"
)
_MAX_NESTED_PAIRS = 8
_FLAG_RE = re.compile(r"(?<!\S)(--?[A-Za-z][A-Za-z0-9_-]*+)(=|[ \t]++)(?!-)"
                      r"(\"[^\"\n]*+\"?|'[^'\n]*+'?|\S++)")
_PASSWORD_FLAGS = frozenset({"-p", "--password", "--passwd", "--pass", "--pwd", "--token",
                             "--secret", "--api-key", "--apikey", "--client-secret",
                             "--access-key", "--secret-key", "--auth", "--passphrase",
                             "--docker-password", "--bearer-token"})
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{24,}+={0,2}")
_HEX_RUN = re.compile(r"[0-9A-Fa-f]{32,}+")
_PERCENT_WORD = re.compile(r"(?<![^\s\"'<>])(?:[^\s\"'<>%]|%(?![0-9A-Fa-f]{2}))*+"
                           r"%[0-9A-Fa-f]{2}[^\s\"'<>]*+")
_DECODED_SECRET = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}+\.|PRIVATE KEY|\"(?:alg|kid)\"\s*:")


def _decodes_to_secret(run: str) -> bool:
    for alphabet in ("std", "url"):
        candidate = run.rstrip("=")
        if alphabet == "std":
            candidate = candidate.replace("-", "+").replace("_", "/")
        else:
            candidate = candidate.replace("+", "-").replace("/", "_")
        for skip in range(4):
            body = candidate[skip:]
            body = body[: len(body) - len(body) % 4]
            if len(body) < 16:
                continue
            try:
                data = (base64.b64decode(body, validate=True) if alphabet == "std"
                        else base64.urlsafe_b64decode(body))
            except (binascii.Error, ValueError):
                continue
            if _DECODED_SECRET.search(data):
                return True
    return False


def _redact_encoded(text: str) -> str:
    spans = [m.span() for m in _B64_RUN.finditer(text) if _decodes_to_secret(m.group())]
    for match in _HEX_RUN.finditer(text):
        run = match.group()
        for skip in (0, 1):
            body = run[skip:]
            body = body[: len(body) - len(body) % 2]
            if _DECODED_SECRET.search(bytes.fromhex(body)):
                spans.append(match.span())
                break
    for match in _PERCENT_WORD.finditer(text):
        decoded = urllib.parse.unquote(match.group())
        if decoded != match.group() and (_DECODED_SECRET.search(decoded.encode("utf-8"))
                                          or (_KEYVALUE_RE.search(decoded) and
                                          _text_rules(decoded) != decoded)):
            spans.append(match.span())
    return _apply(text, spans)


def _basic(match: re.Match[str]) -> str:
    """``Basic <base64 of user:password>`` (not the English word followed by another)."""
    try:
        decoded = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    if b":" not in decoded:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def _bearer(match: re.Match[str]) -> str:
    word, value = match.group(1).lower(), match.group(3)
    if word == "token" and len(value) < 16:  # "token expired", "token is"
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def _pairs(text: str, depth: int = 0) -> str:
    """Credential key/value pairs in ``text`` redacted; a value of a key that turns out not to
    name a credential is read again (``a=password=x``), at most ``_MAX_NESTED_PAIRS`` deep
    (deeper, the value is redacted whole: linear time, fail closed)."""

    def one(match: re.Match[str]) -> str:
        key, sep, value = match.group(1), match.group(2), match.group(3)
        if value.lstrip("\"'").startswith(_ALREADY) or \
                value.strip("\"'").lower() in _NOT_SECRET_VALUES or \
                _SIZE_ONLY.match(match.string, match.start(3)):
            return match.group(0)
        if not credential_name(key):
            if not any(c in value for c in ":="):
                return match.group(0)
            if depth >= _MAX_NESTED_PAIRS:
                return f"{key}{sep}{REDACTED}"
            return f"{key}{sep}{_pairs(value, depth + 1)}"
        if value[:1] in "\"'":
            closing = value[0] if len(value) > 1 and value.endswith(value[0]) else ""
            return f"{key}{sep}{value[0]}{REDACTED}{closing}"
        return f"{key}{sep}{REDACTED}"

    return _KEYVALUE_RE.sub(one, text)


def _flag(match: re.Match[str]) -> str:
    flag, sep, value = match.group(1), match.group(2), match.group(3)
    if value.lstrip("\"'").startswith(_ALREADY) or not (flag in _PASSWORD_FLAGS or (
            flag.startswith("--") and credential_name(flag[2:]))) or \
            value.strip("\"'").lower() in _NOT_SECRET_VALUES:
        return match.group(0)
    if value[:1] in "\"'":
        closing = value[0] if len(value) > 1 and value.endswith(value[0]) else ""
        return f"{flag}{sep}{value[0]}{REDACTED}{closing}"
    return f"{flag}{sep}{REDACTED}"


def _userinfo(match: re.Match[str]) -> str:
    if match.group(3).startswith(_ALREADY):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}:{REDACTED}@"


def _text_rules(text: str) -> str:
    if _PEM_FAST in text:
        text = _PEM.sub(REDACTED, text)
    text = _JWT_RE.sub(REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    text = _BEARER_RE.sub(_bearer, text)
    text = _BASIC_RE.sub(_basic, text)
    text = _URL_USERINFO.sub(_userinfo, text)
    text = _pairs(text)
    return _FLAG_RE.sub(_flag, text)


# ---------------------------------------------------------------------------------- entry


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` cleaned, with credentials replaced by ``[REDACTED]`` (see the module doc)."""
    text = clean(text)
    text = _redact_known(text, secrets)
    text = _apply(text, _Structure(text).run())
    if _PEM_FAST in text:
        text = _PEM.sub(REDACTED, text)
    text = _redact_encoded(text)
    return _text_rules(text)


def output_sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def bound_output(raw: bytes, *, limit: int, truncated: bool, secrets: Sequence[str] = ()
                 ) -> tuple[str, bool, str]:
    """(redacted text of at most ``limit`` UTF-8 bytes, truncated, its ``sha256:<hex>``)."""
    text = redact(raw.decode("utf-8", errors="replace"), secrets)
    data = text.encode("utf-8")
    if len(data) > limit:
        text = data[:limit].decode("utf-8", errors="ignore")
        truncated = True
    return text, truncated, output_sha256(text)


__all__ = ["REDACTED", "bound_output", "clean", "credential_name", "output_sha256", "redact"]
