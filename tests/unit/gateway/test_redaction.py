"""Redaction of command output: every kind of credential an outside review found leaking, each
in the shapes real tools print it, and hostile output that must not stall the gateway.

A secret counts as leaked when it appears in the output whole, with whitespace removed (a
token wrapped across lines), or by any 16-character piece of it.
"""

from __future__ import annotations

import base64
import codecs
import json
import textwrap
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wingman.gateway.redaction import (
    REDACTED,
    WITHHELD,
    bound_output,
    clean,
    credential_name,
    redact,
)

JWT = ("eyJhbGciOiJSUzI1NiIsImtpZCI6IkNsaWVudEtleSJ9."
       "eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Iiwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50In0."
       "c2lnbmF0dXJlLWJ5dGVzLXRoYXQtbG9vay1saWtlLWEtcmVhbC1zaWduYXR1cmUtdmFsdWU")
PASSWORD = "Tr0ub4dor&3-horse"
SPACED = "correct horse battery staple"
PEM_KEY = textwrap.dedent("""\
    -----BEGIN RSA PRIVATE KEY-----
    MIIEowIBAAKCAQEA2a2rwplBQLzHPZe5TNJNBnKFuoVk2z8TPm1zF7nQ0Q3vD6dF
    q8y3o1pY0p6s7Hk2h0lT0x1n9Jj2f0m4Q4t0bXzqgk2w3b8m9Yq1q4r7p2sE1xYt
    -----END RSA PRIVATE KEY-----
    """)
KEY_BODY = "MIIEowIBAAKCAQEA2a2rwplBQLzHPZe5TNJNBnKFuoVk2z8TPm1zF7nQ0Q3vD6dF"


def leaks(out: str, secret: str) -> bool:
    compact = "".join(out.split())
    if secret in out or "".join(secret.split()) in compact:
        return True
    bare = "".join(secret.split())
    if len(bare) >= 24:
        return any(bare[i:i + 16] in compact for i in range(len(bare) - 15))
    return False


# --------------------------------------------------------------------------- what leaked


CASES = {
    # environment entries, in YAML, pretty JSON and flow style
    "env-yaml": (f"    env:\n    - name: DB_PASSWORD\n      value: {PASSWORD}\n"
                 "    - name: LOG_LEVEL\n      value: debug\n", PASSWORD),
    "env-yaml-quoted": (f'    - name: API_TOKEN\n      value: "{SPACED}"\n', SPACED),
    "env-json": ('        "env": [\n            {\n                "name": "DB_PASSWORD",\n'
                 f'                "value": "{PASSWORD}"\n            }}\n        ],\n',
                 PASSWORD),
    "env-flow": (f"env: [{{name: STRIPE_SECRET_KEY, value: {PASSWORD}}}]\n", PASSWORD),
    "env-compact-json": (f'{{"name":"AWS_SECRET_ACCESS_KEY","value":"{PASSWORD}"}}', PASSWORD),
    "dotenv": (f"export DB_PASSWORD={PASSWORD}\n", PASSWORD),
    # authorization headers
    "basic": ("> GET / HTTP/1.1\n> Authorization: Basic "
              f"{base64.b64encode(f'admin:{PASSWORD}'.encode()).decode()}\n",
              base64.b64encode(f"admin:{PASSWORD}".encode()).decode()),
    "basic-lower": ("authorization: basic "
                    f"{base64.b64encode(f'u:{PASSWORD}'.encode()).decode()}",
                    base64.b64encode(f"u:{PASSWORD}".encode()).decode()),
    "auth-scheme": (f"Authorization: AWS4-HMAC-SHA256 Credential={PASSWORD}/x", PASSWORD),
    "bearer": (f"curl -H 'Authorization: Bearer {PASSWORD}'", PASSWORD),
    # connection URLs
    "postgres-url": (f"connecting to postgresql://app:{PASSWORD}@db.internal:5432/app",
                     PASSWORD),
    "redis-url": (f"REDIS_URL=redis://:{PASSWORD}@cache:6379/0", PASSWORD),
    "https-url": (f"remote: https://deploy:{PASSWORD}@git.example.com/x.git", PASSWORD),
    "url-in-json": (f'{{"dsn": "mysql://root:{PASSWORD}@10.0.0.5/db"}}', PASSWORD),
    # a password with an unencoded '/', '?', '#' or '@' runs to the last '@'
    "url-slash": (f"connecting to postgresql://app:pa/{PASSWORD}@db:5432/app", PASSWORD),
    "url-query": (f"POST https://u:p?{PASSWORD}@witness:8443/x failed", PASSWORD),
    "url-fragment": (f"git clone https://u:p#{PASSWORD}@git.example/x.git", PASSWORD),
    "url-ats": (f"dsn=postgresql://app:p/@q#{PASSWORD}@db/app sslmode", PASSWORD),
    # key names
    "pwd": (f"Server=db;Database=app;Uid=sa;Pwd={PASSWORD};", PASSWORD),
    "pwd-colon": (f"PWD: {PASSWORD}", PASSWORD),
    "passphrase": (f"ssh_passphrase = {PASSWORD}", PASSWORD),
    "apikey-camel": (f'"apiKey": "{PASSWORD}"', PASSWORD),
    "client-secret": (f"client_secret={PASSWORD}&grant_type=client_credentials", PASSWORD),
    "quoted-spaces": (f'password: "{SPACED}"', SPACED),
    "single-quoted-spaces": (f"secret = '{SPACED}'", SPACED),
    # command lines
    "dash-p": (f"mysql -u root -p {PASSWORD} -h db", PASSWORD),
    "dash-p-equals": (f"tool -p={PASSWORD}", PASSWORD),
    "long-flag": (f"docker login --password {PASSWORD} registry", PASSWORD),
    "long-flag-equals": (f"app --api-key={PASSWORD} --verbose", PASSWORD),
    # private keys
    "pem-rsa": (f"key:\n{PEM_KEY}done\n", KEY_BODY),
    "pem-openssh": ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + KEY_BODY + "\n"
                    "-----END OPENSSH PRIVATE KEY-----\n", KEY_BODY),
    "pem-cut-short": ("-----BEGIN PRIVATE KEY-----\n" + KEY_BODY + "\n" + KEY_BODY[::-1],
                      KEY_BODY),
    "pem-encrypted": ("-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + KEY_BODY +
                      "\n-----END ENCRYPTED PRIVATE KEY-----", KEY_BODY),
    # hidden from the rules by escapes and invisible characters
    "ansi-value": (f"password: \x1b[31m{PASSWORD}\x1b[0m", PASSWORD),
    "ansi-key": (f"\x1b[1mpassword\x1b[0m=\x1b[32m{PASSWORD}\x1b[0m", PASSWORD),
    "zero-width-value": (f"password=\u200b{PASSWORD}", PASSWORD),
    "zero-width-key": (f"pass\u200bword: {PASSWORD}", PASSWORD),
    "bidi": (f"token: \u202e{PASSWORD}\u202c", PASSWORD),
    "osc": (f"\x1b]8;;https://x\x07password\x1b]8;;\x07={PASSWORD}", PASSWORD),
    # tokens, whole, wrapped, interleaved, encoded
    "jwt": (f"token is {JWT} here", JWT),
    "jwt-wrapped-64": ("\n".join(textwrap.wrap(JWT, 64)), JWT),
    "jwt-wrapped-indented": ("    " + "\n    ".join(textwrap.wrap(JWT, 40)), JWT),
    "jwt-ansi-interleaved": ("\x1b[0m".join(JWT[i:i + 7] for i in range(0, len(JWT), 7)),
                             JWT),
    "jwt-base64": (f"data: {base64.b64encode(JWT.encode()).decode()}",
                   base64.b64encode(JWT.encode()).decode()),
    "jwt-base64-unaligned": (
        f"blob {base64.b64encode(b'xy' + JWT.encode()).decode()}",
        base64.b64encode(b"xy" + JWT.encode()).decode()[4:]),
    "jwt-base64url": (base64.urlsafe_b64encode(b"t=" + JWT.encode()).decode(),
                      base64.urlsafe_b64encode(b"t=" + JWT.encode()).decode()[4:]),
    "jwt-hex": (f"hex {JWT.encode().hex()}", JWT.encode().hex()),
    "jwt-percent": (f"url=https://x/cb?id_token={urllib.parse.quote(JWT, safe='')}", JWT),
    "jwt-percent-dots": ("q=" + JWT.replace(".", "%2E"), JWT.replace(".", "%2E")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_kind_of_credential_is_redacted(name: str) -> None:
    text, secret = CASES[name]
    out = redact(text)
    assert not leaks(out, secret), out
    assert REDACTED in out


# --------------------------------------------------------------------------- structure

SECRET_YAML = textwrap.dedent(f"""\
    apiVersion: v1
    data:
      .dockerconfigjson: {base64.b64encode(b'{"auths":{}}').decode()}
      ca.crt: {base64.b64encode(b"cert").decode()}
      username: {base64.b64encode(b"admin").decode()}
      x: {base64.b64encode(PASSWORD.encode()).decode()}
    kind: Secret
    metadata:
      annotations:
        kubectl.kubernetes.io/last-applied-configuration: |
          {{"apiVersion":"v1","data":{{"x":"{base64.b64encode(PASSWORD.encode()).decode()}"}},"kind":"Secret","metadata":{{"name":"db"}},"stringData":{{"plain":"{SPACED}"}}}}
      name: db
      namespace: apps
    stringData:
      anything: {SPACED}
    type: Opaque
    """)


def test_a_secrets_data_is_redacted_under_any_key_in_yaml() -> None:
    out = redact(SECRET_YAML)
    for leaked in (base64.b64encode(PASSWORD.encode()).decode(), SPACED,
                   base64.b64encode(b"admin").decode(), base64.b64encode(b"cert").decode()):
        assert not leaks(out, leaked), out
    # the shape stays readable: every key, no value
    for kept in ("apiVersion: v1", "  username: [REDACTED]", "  x: [REDACTED]",
                 "kind: Secret", "  name: db", "type: Opaque", "  anything: [REDACTED]"):
        assert kept in out, out


def test_a_secret_list_in_pretty_json_is_redacted() -> None:
    items = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}"},
              "data": {f"key-{i}": base64.b64encode(f"{PASSWORD}-{i}".encode()).decode(),
                       "nested": base64.b64encode(b"value-" * 3).decode()},
              "type": "Opaque"} for i in range(3)]
    text = json.dumps({"apiVersion": "v1", "items": items, "kind": "List"}, indent=4)
    out = redact(text)
    for i in range(3):
        assert not leaks(out, base64.b64encode(f"{PASSWORD}-{i}".encode()).decode()), out
        assert f'"key-{i}": "[REDACTED]"' in out
    json.loads(out)  # still JSON


def test_a_secret_cut_off_by_the_output_bound_is_still_redacted() -> None:
    # `kubectl get secret -o yaml` puts data before kind: a cut output never says Secret
    text = SECRET_YAML.split("kind: Secret")[0]
    text = text[: text.index("x: ") + 10]
    out = redact(text)
    assert not leaks(out, base64.b64encode(b"admin").decode())
    assert base64.b64encode(PASSWORD.encode()).decode()[:7] not in out


KNOWN = "capability-" + "Zm9vYmFyYmF6cXV4" * 4


# (the secret's own characters start 3 characters into its base64 after 2 other bytes)
@pytest.mark.parametrize(("form", "skip"), [
    (KNOWN, 0), (KNOWN.encode().hex(), 0), (base64.b64encode(b"xy" + KNOWN.encode()).decode(), 3),
    (KNOWN[:10] + "\n  " + KNOWN[10:], 0)])
@pytest.mark.parametrize("shown", [8, 13, 40])
def test_a_known_secret_cut_by_the_output_bound_loses_its_start_too(form: str, skip: int,
                                                                      shown: int) -> None:
    """The bound (or the deadline) cuts the raw output inside a known secret: its start at
    the end, in any of the forms found whole, is redacted (8 characters or more of it)."""
    raw = ("before\n" + form).encode()
    cut = raw.index(form.encode()) + skip + shown + (3 if "\n" in form and shown > 10 else 0)
    text, truncated, _ = bound_output(raw[:cut], limit=1 << 16, truncated=True,
                                      secrets=[KNOWN])
    assert truncated and text.startswith("before\n") and text.endswith(REDACTED), text
    assert "".join(form.split())[skip:skip + 8] not in "".join(text.split()), text


@pytest.mark.parametrize("binary", [b"\x00", b"\xff", b"\x7f", b"\x01", b"\xc2\x85"])
@pytest.mark.parametrize(("output", "cut", "secret"), [
    # the binary byte on the line of the secret's start, of its end, or inside one part;
    # and the output cut inside the secret, on its binary line (a ServiceAccount token and a
    # secret whose end the rules for base64 values would redact on its own)
    ("{b}{head}\n{tail}\n", False, JWT), ("ok {head}{b}\n{tail}\n", False, JWT),
    ("{head}\n{tail} {b}\n", False, KNOWN), ("{head}\n{tail_a}{b}{tail_b}\n", False, KNOWN),
    ("ok {head}\n{b}{tail_a}", True, KNOWN),
])
def test_a_known_secret_split_across_lines_one_of_them_binary_is_redacted_whole(
        binary: bytes, output: str, cut: bool, secret: str) -> None:
    """A line holding binary data is redacted whole: a known secret split across it and
    another line is redacted on that other line too, not left there in part."""
    head, tail = secret[:30], secret[30:]
    raw = output.format(b="\0", head=head, tail=tail, tail_a=tail[:10], tail_b=tail[10:])
    data = raw.encode().replace(b"\0", binary)
    text, _, _ = bound_output(data, limit=1 << 16, truncated=cut, secrets=[secret])
    compact = "".join(text.split())
    assert not any(secret[i:i + 8] in compact for i in range(len(secret) - 7)), text


@pytest.mark.parametrize("secret", [KNOWN, JWT])
@pytest.mark.parametrize("escape", ["\x1b", "\x1b[", "\x1b[1", "\x1b[1;31", "\x1b(", "\x1b#",
                                    "\x1b]", "\x1bP"])
def test_a_known_secret_with_an_escape_sequence_inside_is_redacted_whole(
        secret: str, escape: str) -> None:
    """Cleaning removes an escape sequence with the character that ends it, which may be one
    of the secret's: the secret is still found whole, and none of it is left."""
    at = next(i for i in range(40, len(secret)) if secret[i].isalpha())  # a final byte
    text, _, _ = bound_output(f"ok {secret[:at]}{escape}{secret[at:]} done\n".encode(),
                              limit=1 << 16, truncated=False, secrets=[secret])
    compact = "".join(text.split())
    assert text == f"ok {REDACTED} done\n", text
    assert not any(secret[i:i + 8] in compact for i in range(len(secret) - 7)), text


@pytest.mark.parametrize("secret", [KNOWN, JWT])
@pytest.mark.parametrize("invisible", ["\u200b", "\u2060", "\ufeff", "\u200e", "\u202e",
                                       "\u00ad", "fullwidth"])
@pytest.mark.parametrize("escape", ["\x1b", "\x1b[1;31", "\x1b(", "\x1b]", "\x1bP", "\x00",
                                    "\x9b1"])
def test_a_known_secret_with_an_escape_sequence_and_an_invisible_character_is_redacted_whole(
        secret: str, invisible: str, escape: str) -> None:
    """Cleaning removes an escape sequence with a character of the secret, and removes an
    invisible character (zero-width, bidirectional) or reads a fullwidth one as ASCII: with
    both in one secret, it is still found whole, and none of it is left."""
    at = next(i for i in range(40, len(secret)) if secret[i].isalpha())  # a final byte
    if invisible == "fullwidth":  # one of its letters as its fullwidth form
        shown = secret[:10] + chr(ord(secret[10]) + 0xFEE0) + secret[11:at]
    else:
        shown = secret[:10] + invisible + secret[10:at]
    if escape == "\x00":  # the rest on a line of binary data (redacted whole)
        raw = f"ok {shown}\n\x00{secret[at:]} done\n"
    elif escape == "\x9b1":  # an 8-bit CSI ending with one of its letters (a binary line)
        raw = f"ok {shown}{escape}{secret[at:at + 3]}\n{secret[at + 3:]} done\n"
    else:
        raw = f"ok {shown}{escape}{secret[at:]} done\n"
    text, _, _ = bound_output(raw.encode(), limit=1 << 16, truncated=False, secrets=[secret])
    compact = "".join(text.split())
    assert text == f"ok {REDACTED} done\n", text
    assert not any(secret[i:i + 8] in compact for i in range(len(secret) - 7)), text


@pytest.mark.parametrize("secret", [KNOWN, JWT])
@pytest.mark.parametrize("letter", [
    "\u0430", "\u03b1", "\U0001d41a", "\uff41", "\u00e1", "a\u0301", "\u24d0"])
@pytest.mark.parametrize("escape", ["", "\x1b[1;31"])
def test_a_known_secret_with_look_alike_letters_is_redacted_whole(secret: str, letter: str,
                                                                   escape: str) -> None:
    """A letter of the secret printed as one that reads as it (a Cyrillic or Greek
    look-alike, a mathematical, fullwidth, accented or circled letter, an accent added): a
    person reads the secret, so it is found, with an escape sequence inside too."""
    at = next(i for i in range(40, len(secret)) if secret[i].isalpha())  # a final byte
    shown = secret[:at].replace("a", letter)
    assert shown != secret[:at]
    raw = f"ok {shown}{escape}{secret[at:]} done\n"
    text, _, _ = bound_output(raw.encode(), limit=1 << 16, truncated=False, secrets=[secret])
    assert text == f"ok {REDACTED} done\n", text


@pytest.mark.parametrize("secret", [KNOWN, JWT])
@pytest.mark.parametrize("upper", [False, True])
def test_a_known_secret_hex_escaped_byte_by_byte_is_redacted(secret: str, upper: bool) -> None:
    """``\\x65\\x79...`` (a C or Python string literal, printf): hex-escaped as the docs say."""
    escaped = "".join(f"\\x{byte:02{'X' if upper else 'x'}}" for byte in secret.encode())
    text, _, _ = bound_output(f'key = "{escaped}"\n'.encode(), limit=1 << 16, truncated=False,
                              secrets=[secret])
    assert text == f'key = "{REDACTED}"\n', text


@pytest.mark.parametrize("secret", [KNOWN, JWT])
@pytest.mark.parametrize("byte", ["%{:02x}", "%{:02X}", "0x{:02x}, ", "0x{:02X}, "])
def test_a_known_secret_escaped_byte_by_byte_otherwise_is_redacted(secret: str, byte: str
                                                                   ) -> None:
    """Every byte percent-escaped (``%65%79``, percent-escaped as the docs say), and a C
    array's bytes (``xxd -i``: ``0x65, 0x79,``, wrapped at 12 a line), beside ``\\x65``."""
    data = secret.encode()
    if byte.startswith("0x"):
        rows = [data[i:i + 12] for i in range(0, len(data), 12)]
        encoded = ",\n  ".join("".join(byte.format(b) for b in row).rstrip(", ")
                               for row in rows)
        raw = f"unsigned char t[] = {{\n  {encoded}\n}};\n"
        kept = f"unsigned char t[] = {{\n  {REDACTED}\n}};\n"
    else:
        raw = f"url: /cb?token={''.join(byte.format(b) for b in data)}\n"
        kept = f"url: /cb?token={REDACTED}\n"
    text, _, _ = bound_output(raw.encode(), limit=1 << 16, truncated=False, secrets=[secret])
    assert text == kept, text


def test_each_of_thousands_of_known_secrets_is_found_in_one_reading() -> None:
    # a preview's Secret of many keys: each value (and its forms) looked for in the diff,
    # wherever it is and however it is written, in one reading for all of them
    values = [f"value{i:05d}-{i * 7919 % 100_003:06d}q" for i in range(12_000)]
    shown = [values[5], values[6_000][::-1], base64.b64encode(values[11_999].encode()).decode(),
             values[42].encode().hex(), values[7].upper()]
    text = "".join(f"+  key{i}: ********\n" for i in range(8_000)) + "\n".join(shown) + "\n"
    started = time.process_time()
    out = redact(text, values)
    assert time.process_time() - started < 20
    assert not any(s in out for s in shown) and out.count(REDACTED) == len(shown)


def test_a_megabyte_of_a_known_secret_s_starts_is_read_in_linear_time() -> None:
    periodic = "ab" * 4096  # a secret whose starts recur in itself: the worst case
    started = time.process_time()
    text, _, _ = bound_output(("ab" * 500_000 + "c").encode(), limit=1 << 21, truncated=True,
                              secrets=[periodic, KNOWN])
    assert time.process_time() - started < 20
    tail = text.split(REDACTED)[-1]  # whole copies only (of it or of it reversed)
    assert text.startswith(REDACTED) and tail.endswith("ab" * 287 + "c") and len(tail) < 600


def test_a_start_of_a_known_secret_shorter_than_eight_or_not_at_the_end_is_kept() -> None:
    text, _, _ = bound_output(f"at {KNOWN[:7]}".encode(), limit=1024, truncated=True,
                              secrets=[KNOWN])
    assert text == f"at {KNOWN[:7]}"
    text, _, _ = bound_output(f"{KNOWN[:12]} then more\n".encode(), limit=1024,
                              truncated=True, secrets=[KNOWN])
    assert text == f"{KNOWN[:12]} then more\n"
    assert redact(f"at {KNOWN[:12]}", [KNOWN]) == f"at {KNOWN[:12]}"  # not cut: whole ones


# A capability token as the gateway is given one (no piece of it repeats, so a dump of it
# elides no line)
TOKEN = "capability-" + "kP3xQz9LmW2vRt7YbN4cHs8JdF6gUe1A"


def _lines(data: bytes, size: int = 16) -> list[tuple[int, bytes]]:
    return [(i, data[i:i + size]) for i in range(0, len(data), size)]


def _shown(chunk: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)


def _xxd(data: bytes) -> str:  # xxd
    return "".join(f"{i:08x}: {' '.join(c[j:j + 2].hex() for j in range(0, len(c), 2)):<39}"
                   f"  {_shown(c)}\n" for i, c in _lines(data))


def _hexdump(data: bytes) -> str:  # hexdump -C
    return "".join(f"{i:08x}  {' '.join(f'{b:02x}' for b in c[:8]):<23}  "
                   f"{' '.join(f'{b:02x}' for b in c[8:]):<23}  |{_shown(c)}|\n"
                   for i, c in _lines(data)) + f"{len(data):08x}\n"


def _od(data: bytes, byte: str) -> str:  # od -t x1, od -b, od -c
    return "".join(f"{i:07o}" + "".join(byte.format(b) if byte != "c" else f"{chr(b):>4}"
                                        for b in c) + "\n"
                   for i, c in _lines(data)) + f"{len(data):07o}\n"


def _wrapped(text: str, width: int = 76) -> str:  # as base64 and base32 wrap
    return "".join(text[i:i + width] + "\n" for i in range(0, len(text), width))


ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "base64 twice": lambda d: _wrapped(base64.b64encode(
        _wrapped(base64.b64encode(d).decode()).encode()).decode()),
    "base64 twice, a line before": lambda d: base64.b64encode(
        base64.b64encode(b"token=" + d + b"\n")).decode(),
    "base64 twice, url-safe": lambda d: base64.urlsafe_b64encode(
        base64.urlsafe_b64encode(b"x" + d)).decode(),
    "base32": lambda d: _wrapped(base64.b32encode(d).decode()),
    "base32 lowercase": lambda d: base64.b32encode(b"\0" + d).decode().lower(),
    "octal escapes": lambda d: "".join(f"\\{b:03o}" for b in d),
    "octal escapes, shortest": lambda d: "".join(f"\\{b:o}" for b in d),
    "hex, colons": lambda d: ":".join(f"{b:02x}" for b in d),
    "hex, colons, capitals, wrapped": lambda d: ":\n    ".join(
        ":".join(f"{b:02X}" for b in d[i:i + 15]) for i in range(0, len(d), 15)),
    "hex, spaces": lambda d: " ".join(f"{b:02x}" for b in d),
    "hex, dashes": lambda d: "-".join(f"{b:02X}" for b in d),
    "hex, mixed case": lambda d: "".join(f"{b:02x}" if i % 2 else f"{b:02X}"
                                         for i, b in enumerate(d)),
    "\\x, mixed case": lambda d: "".join(f"\\x{b:02x}" if i % 2 else f"\\X{b:02X}"
                                         for i, b in enumerate(d)),
    "0x, mixed case": lambda d: ", ".join(f"0x{b:02x}" if i % 2 else f"0X{b:02X}"
                                          for i, b in enumerate(d)),
    "\\u00NN": lambda d: "".join(f"\\u{b:04x}" for b in d),
    "\\u{NN}": lambda d: "".join(f"\\u{{{b:x}}}" for b in d),
    "%uNNNN": lambda d: "".join(f"%u{b:04X}" for b in d),
    "hex entities": lambda d: "".join(f"&#x{b:x};" for b in d),
    "decimal entities": lambda d: "".join(f"&#{b};" for b in d),
    "some escaped": lambda d: "".join(f"&#{b};" if i % 3 == 0 else f"\\{b:03o}" if i % 3 == 1
                                      else chr(b) for i, b in enumerate(d)),
    "percent, mixed case": lambda d: "".join(f"%{b:02x}" if i % 2 else f"%{b:02X}"
                                             for i, b in enumerate(d)),
    "xxd": _xxd,
    "hexdump -C": _hexdump,
    "od -t x1": lambda d: _od(d, " {:02x}"),
    "od -An -t x1": lambda d: "".join(" " + " ".join(f"{b:02x}" for b in c) + "\n"
                                      for _, c in _lines(d)),
    "od -b": lambda d: _od(d, " {:03o}"),
    "od -c": lambda d: _od(d, "c"),
    "capitals": lambda d: d.decode().upper(),
    "case swapped": lambda d: d.decode().swapcase(),
    "a comma after each character": lambda d: ",".join(d.decode()),
    "quoted characters": lambda d: " + ".join(f"'{c}'" for c in d.decode()),
    "reversed": lambda d: d.decode()[::-1],
    "rot13": lambda d: codecs.encode(d.decode(), "rot13"),
}


# (a secret no rule but the known secrets' would redact by its shape: nothing random in it)
WORDS = "gateway-run-for-the-cluster-admin-ops"


@pytest.mark.parametrize("secret", [TOKEN, JWT, WORDS])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_known_secret_encoded_otherwise_is_redacted(secret: str, encoding: str) -> None:
    """A command prints the gateway's token in an encoding or dump other than the ones
    before: none of it is left (neither a piece of the encoding, nor of the token in a dump's
    column of characters)."""
    encoded = ENCODINGS[encoding](secret.encode())
    text, _, _ = bound_output(f"head\n{encoded}\ntail\n".encode(), limit=1 << 16,
                              truncated=False, secrets=[secret])
    compact = "".join(text.split())
    bare = "".join(encoded.split())
    assert REDACTED in text and compact.startswith("head") and compact.endswith("tail"), text
    assert not any(bare[i:i + 16] in compact for i in range(8, len(bare) - 24)), text
    assert not any(secret[i:i + 8] in compact for i in range(len(secret) - 7)), text


@pytest.mark.parametrize("encoding", ["octal escapes", "\\x, mixed case", "hex, colons",
                                      "hex entities", "xxd"])
def test_a_known_secret_encoded_otherwise_and_cut_loses_its_start(encoding: str) -> None:
    """The output bound cuts one of those encodings: its start is redacted as a start of the
    token's other forms is (what is left after it is an escape's start: ``\\x``, ``;&#x``)."""
    encoded = ENCODINGS[encoding](TOKEN.encode())
    raw = f"head\n{encoded}".encode()[:len("head\n") + len(encoded) // 2]
    text, _, _ = bound_output(raw, limit=1 << 16, truncated=True, secrets=[TOKEN])
    assert REDACTED in text and len(text.rsplit(REDACTED, 1)[1]) <= 4, text
    assert text.startswith("head\n") and text.index(REDACTED) <= len("head\n00000000: "), text
    assert not any(TOKEN[i:i + 8] in text for i in range(len(TOKEN) - 7)), text


def test_ordinary_output_is_kept_whole_beside_the_known_secrets() -> None:
    """What the other encodings are read in (hex digits, escapes, base64 runs, hex dumps)
    holds no token: it is kept as it is."""
    other = bytes(range(256)) + b"another-token-" + TOKEN[::2].encode()
    text = "\n".join([
        _xxd(other), _hexdump(other), _od(other, " {:03o}"), _od(other, "c"),
        base64.b64encode(base64.b64encode(other)).decode(), other.hex(":"),
        "".join(f"&#{b};" for b in other), "".join(f"\\{b:03o}" for b in other),
        "df22315 scope: the allowlist's {name} kept its own copy (50%, &amp; \\n)",
        "web-7d9f8b6c4-x2k4q   1/1     Running   0          5m12s   10.0.0.7   node-1"]) + "\n"
    assert redact(text, [TOKEN, JWT]) == redact(text), text


def test_the_encodings_of_a_known_secret_are_read_in_linear_time() -> None:
    """Megabytes of what each view of the output is made of (escapes, base64 runs, hex
    digits, dump lines), a token at the end in each encoding: every one is found."""
    filler = ("\\x41%41&#65;\\101" * 8 + base64.b64encode(bytes(range(256))).decode()
              + "\n" + _xxd(bytes(range(256))) + "deadbeef:" * 20 + "\n") * 1000
    encoded = [ENCODINGS[name](TOKEN.encode()) for name in
               ("base64 twice", "octal escapes", "hex, colons", "xxd", "some escaped")]
    text, _, _ = bound_output((filler + "\n".join(encoded) + "\n").encode(), limit=1 << 24,
                              truncated=False, secrets=[TOKEN, JWT])
    compact = "".join(text.split())
    assert not any(TOKEN[i:i + 8] in compact for i in range(len(TOKEN) - 7))
    for bare in ("".join(e.split()) for e in encoded):
        assert not any(bare[i:i + 16] in compact for i in range(8, len(bare) - 24))


def test_a_kubeconfig_keeps_its_shape_and_loses_its_credentials() -> None:
    client_key = base64.b64encode(PEM_KEY.encode()).decode()
    text = textwrap.dedent(f"""\
        apiVersion: v1
        clusters:
        - cluster:
            certificate-authority-data: {base64.b64encode(b"public ca").decode()}
            server: https://10.0.0.1:6443
          name: prod
        users:
        - name: admin
          user:
            client-certificate-data: {base64.b64encode(b"public cert").decode()}
            client-key-data: {client_key}
        - name: robot
          user:
            token: {JWT}
        - name: basic
          user:
            password: "{SPACED}"
            username: admin
        - name: oidc
          user:
            auth-provider:
              config:
                id-token: {JWT}
                refresh-token: {PASSWORD}
        """)
    out = redact(text)
    for secret in (client_key, JWT, SPACED, PASSWORD):
        assert not leaks(out, secret), out
    assert "server: https://10.0.0.1:6443" in out and "username: admin" in out


def test_a_pod_spec_keeps_everything_but_credential_values() -> None:
    text = textwrap.dedent(f"""\
        spec:
          automountServiceAccountToken: true
          containers:
          - env:
            - name: DATABASE_URL
              value: postgresql://app:{PASSWORD}@db:5432/app
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  key: password
                  name: db
            - name: JWT_SIGNING_KEY
              value: >-
                {PASSWORD}
            - name: REPLICAS
              value: "3"
            image: registry.example.com/web:1.2.3
            name: web
          serviceAccountName: web
          sessionAffinity: None
        """)
    out = redact(text)
    assert not leaks(out, PASSWORD), out
    for kept in ("automountServiceAccountToken: true", 'value: "3"', "key: password",
                 "image: registry.example.com/web:1.2.3", "sessionAffinity: None",
                 "- name: DB_PASSWORD"):
        assert kept in out, out


def test_a_configmap_keeps_plain_values_and_loses_credential_ones() -> None:
    text = textwrap.dedent(f"""\
        apiVersion: v1
        data:
          app.properties: |
            db.url=jdbc:postgresql://db/app
            db.password={PASSWORD}
          log.level: info
          SMTP_PASSWORD: "{SPACED}"
        kind: ConfigMap
        """)
    out = redact(text)
    assert not leaks(out, PASSWORD) and not leaks(out, SPACED), out
    assert "log.level: info" in out and "db.url=jdbc:postgresql://db/app" in out


# --------------------------------------------------------------------------- known secrets


@pytest.mark.parametrize("shape", ["plain", "wrapped", "base64", "base64-offset", "hex",
                                   "percent", "json-escaped", "ansi"])
def test_the_callers_secrets_are_redacted_in_every_shape(shape: str) -> None:
    secret = "sa-token-" + "0123456789abcdef" * 4 + "/+=\"x"
    data = secret.encode()
    text = {
        "plain": secret,
        "wrapped": "\n".join(textwrap.wrap(secret, 20)),
        "base64": base64.b64encode(data).decode(),
        "base64-offset": base64.b64encode(b"pre:" + data).decode(),
        "hex": data.hex(),
        "percent": urllib.parse.quote(secret, safe=""),
        "json-escaped": json.dumps({"t": secret}),
        "ansi": "\x1b[2m".join(secret),
    }[shape]
    out = redact(f"before {text} after", [secret])
    assert "before" in out and "after" in out
    for piece in (secret, data.hex(), base64.b64encode(data).decode()[4:-4]):
        assert not leaks(out, piece), out


# --------------------------------------------------------------------------- ordinary output

# base64 whose last line is 8 characters that decode to text (``abcd``): wrapped at 76 (a file)
# and at 64 (a certificate); the line continues the one above it
WRAPPED_TAIL = "\n".join(textwrap.wrap(base64.b64encode(bytes(range(57, 57 + 114)) + b"abcd")
                                       .decode(), 76))
CERTIFICATE_TAIL = ("-----BEGIN CERTIFICATE-----\n" + "\n".join(textwrap.wrap(base64.b64encode(
    b"0\x82\x01\x0a" + bytes(range(60, 200)) + b"abcd").decode(), 64)) +
    "\n-----END CERTIFICATE-----\n")

ORDINARY = [
    "deployment.apps/web restarted\n",
    # a Secret's name (a pod's volume, a controller's flag) is not its value
    "  volumes:\n  - name: certs\n    secret:\n      defaultMode: 420\n"
    "      secretName: webhook-certs\n",
    '    Args:\n      --secret-name\n      webhook-certs\n      --cert-dir=/certs\n',
    "- args:\n  - --secret-name=webhook-certs\n  - --tokenizer=bpe\n",
    "deployment.apps/web scaled\n",
    'Waiting for deployment "web" rollout to finish: 1 of 3 updated replicas are available...\n',
    "NAME                   READY   STATUS    RESTARTS   AGE\nweb-7d9c6b5d4f-x2x9k   1/1     "
    "Running   0          5m\n",
    "Name:         db\nNamespace:    apps\nType:  Opaque\n\nData\n====\npassword:  16 bytes\n",
    "apiVersion: v1\nkind: Service\nspec:\n  sessionAffinity: None\n  type: ClusterIP\n",
    "tokenization done; nothing to see\n",
    "Events:\n  Normal  Pulled  5m  kubelet  Container image \"nginx:1.27\" already present\n",
    # short padded base64 that is no encoded text: a name with an empty value as ``env`` prints
    # it, the last line of wrapped base64, a checksum of 4 bytes named so (``YWJjZA==`` is
    # ``abcd``), runs whose last character an encoder never writes before the padding
    "HOME=/root\nSERVICE=\nDISPLAY=\n",
    CERTIFICATE_TAIL, json.dumps({"ca.crt": CERTIFICATE_TAIL}) + "\n",
    "gs://bucket/backup.tar:\n    Hash (crc32c):          YWJjZA==\n",
    '{"ChecksumCRC32C": "YWJjZA==", "ETag": "YWJjZGU="}\n',
    "a==b YWRtaW5=  cGFzcx==\n",
    # values of ordinary text, each read as a text of its own
    "description: the token expires in 5 minutes\n",
    'summary: "user,password columns were removed"\n',
    "owner: bob@example.com, alice@example.com\n",
    '{"data": {"app.conf": "port 6379\\nbind 0.0.0.0", "b": "c d"}}',
    "args: --port 8080 --log-level debug\n",
    # prose after a credential's name; a header of one value above the next value
    "    Message:      token expired\n",
    "reason: password reset\n",
    "a: NAME   PASSWORD\nb: value two here\n",
    # logfmt's quoted values, flow collections, tags and anchors, shell assignments, no space
    'level=info ts=2024-05-01T10:00:00Z msg="password reset requested" user=bob\n',
    'level=warn msg="token expired, refreshing" component=auth\n',
    'x: {a: 1, b: two words, c: "x, y"}\ny: [a b, c d, "e f"]\n- {name: web, port: 80}\n',
    "z: !!str plain value here\nw: &anchor some text, more\nv: !custom {k: v w}\n",
    'declare -x HOME="/root"\ndeclare -x PATH="/usr/bin:/bin"\nexport LANG=C.UTF-8\n',
    '  export POD_NAME=$(kubectl get pods -l "app=web" -o jsonpath="{.items[0].metadata.name}")\n',
    "note:see the docs at https://example.com\nimage:nginx:1.27 pulled\n",
    'msg: "line one\\nline two, more\\r\\nthree"\nexport P=a\\ b\\ c\n',
    # a client's and the kubelet's messages naming a kind, a Secret or a volume; a hint
    "failed to list *v1.Secret: secrets is forbidden\n",
    "failed to get *v1beta1.TokenReview: x y\nfailed to watch *authenticationv1.TokenRequest: "
    "a b\nfailed to list *appsv1.Secret: c d\n",
    'E1207 reflector.go:539] failed to list *v1.Secret: secrets is forbidden: User '
    '"system:serviceaccount:a:b" cannot list resource "secrets" in API group "" in the '
    'namespace "c"\n',
    "W1207 reflector.go:424] failed to watch *corev1.Secret: unknown (get secrets)\n",
    'secret "db-creds" not found\n',
    "  Warning  FailedMount  5m  kubelet  MountVolume.SetUp failed for volume \"db-creds\" : "
    'secret "db-creds" not found\n',
    "hint: pass --namespace\n",
    # a message's words after a credential's name and a colon, in logfmt's quotes
    'msg="auth: login ok, session created"\n',
    'level=warn msg="token: refresh failed, retrying" component=auth\n',
    'msg="token: refreshed ok"\nmsg="session: rotating now"\nmsg="auth: checked and valid"\n',
    # prose after a credential's name as a value of its own (not a file's text)
    'reason: "password expired"\nmsg: token refreshed\n{"status": "auth required"}\n',
    # a projected volume's token source: which token and where, none of its value
    "serviceAccountToken: {expirationSeconds: 3600, path: token}\n",
    '{"serviceAccountToken":{"audience":"vault","expirationSeconds":3607,"path":"token"}}\n',
    "- serviceAccountToken:\n    audience: vault\n    expirationSeconds: 3607\n    path: token\n",
    # a path, a flag, a source beside a name that is also a word of commands
    "pwd /root\npass --namespace\npwd ~/.config/app\n",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_output_is_kept_as_it_is(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("above", [
    # values printed one a line (``printenv A B``, ``-o jsonpath='{.data.a}{"\\n"}{.data.b}'``):
    # a token, a long value, a digest; not a line of wrapped base64 (64 or 76 characters)
    "dG9rZW4tb2YtdGhpcnR5LWJ5dGVzLWV4YWN0bHk", base64.b64encode(bytes(range(30, 231))).decode(),
    "Digest: sha256:" + "0123456789abcdef" * 4, "  ca: " + "QUJD" * 19,
])
def test_a_short_run_below_a_line_that_is_no_wrapped_base64_is_redacted(above: str) -> None:
    assert "cGFzcw==" not in redact(f"{above}\ncGFzcw==\n")


@pytest.mark.parametrize("text", [f"{WRAPPED_TAIL}\n", "  " + WRAPPED_TAIL.replace("\n", "\n  ")])
def test_the_last_line_of_wrapped_base64_is_no_short_encoded_text(text: str) -> None:
    # the lines above are random-looking bytes (redacted); the last is their continuation
    assert redact(text).endswith("\n" + text.splitlines()[-1] + "\n"[:text.endswith("\n")])


@settings(max_examples=300, deadline=None)
@given(secret=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=4,
                      max_size=5),
       shape=st.sampled_from(["{}\n", "{} {}\n", "db   {}   5d\n", '{{"a": "{}"}}',
                              "map[a:{}]", "conn: {}\n", "- {}\n"]))
def test_base64_of_four_or_five_bytes_of_text_standing_alone_is_redacted(secret: str,
                                                                        shape: str) -> None:
    for encoded in {base64.b64encode(secret.encode()).decode(),
                    base64.urlsafe_b64encode(secret.encode()).decode()}:
        # (but a name in capitals with an empty value, ``SERVICE=``, what ``env`` prints)
        if not (encoded.endswith("=") and encoded[:-1].isalpha() and encoded[:-1].isupper()
                and not encoded.endswith("==")):
            assert encoded not in redact(shape.format(encoded, encoded))


def test_cleaning_keeps_text_and_drops_what_a_terminal_would_interpret() -> None:
    assert clean("\x1b[1;31mred\x1b[0m\tok\r\n\x07") == "red\tok\n"
    assert clean("a\u200bb\u202ec\ufeffd é ü 漢字") == "abcd é ü 漢字"
    assert clean("漢字\uff1a\uff41\uff11") == "漢字:a1"


@pytest.mark.parametrize(("name", "credential"), [
    ("DB_PASSWORD", True), ("apiKey", True), ("client-key-data", True), ("pwd", True),
    ("x-auth-token", True), ("AWS_SECRET_ACCESS_KEY", True), ("passphrase", True),
    ("ssh_key", True), ("private_key_file", False), ("LOG_LEVEL", False), ("name", False),
    ("key", False), ("author", False), ("sessionAffinity", False), ("bypass", False),
    ("SENTRY_DSN", True), ("pgDsn", True), ("dsnString", True), ("web-lkgdsntj", False),
    ("PGDSN2", True), ("sentrydsn1", True),
    # one word ending in a credential's, and the ids that are secrets
    ("rootpw", True), ("ldap_bindpw", True), ("DBPASS", True), ("smtppass", True),
    ("dbpwd", True), ("storepass", True), ("pass1", True), ("TS_AUTHKEY", True),
    ("masterkey", True), ("privkey", True), ("wpa_psk", True), ("VAULT_SECRET_ID", True),
    ("SESSION_ID", True), ("ASP.NET_SessionId", True),
    ("compass", False), ("bypass_cache", False), ("passenger", False), ("client_id", False),
    ("secret_id_ttl", False), ("upskill", False), ("passive", False),
    ("OAUTH_KEYCLOAK_REALM", False), ("master_keyspace", False), ("LOWPASS_HZ", False),
    ("multipass", False),
    # the name of a Secret or token, a reference to one: not its value
    ("secretName", False), ("secret-name", False), ("TOKEN_NAME", False), ("secretRef", False),
    ("tokenizer", False), ("tokenizer_secret", True),
])
def test_credential_names(name: str, credential: bool) -> None:
    assert credential_name(name) is credential


@pytest.mark.parametrize(("text", "kept"), [
    ("spring.datasource.password=Ab1,Cd2}Ef3]Gh4\n", []),
    ("--db-password=Ab1,Cd2}Ef3 -v", ["-v"]),
    ("[db]\npassword = Ab1,Cd2]Ef3\nhost = db\n", ["host = db"]),
    ("https://h/x?token=Ab1,Cd2}Ef3&page=2", ["page=2"]),
    ("password=Ab1,user=bob", ["user=bob"]),  # a comma that starts another pair ends it
    # (another pair: a key with the credential's separator, in its case; else the value's own)
    ("password=Ab1,Cd2:Ef3\n", []), ("token=Ab1,Cd2=Ef3 -v\n", ["-v"]),
    ("API_KEY: Ab1,Cd2=Ef3,Gh4\n", []), ("password=Ab1,Cd2,mode=x", ["mode=x"]),
])
def test_an_unquoted_value_is_redacted_past_the_commas_and_brackets_it_holds(
        text: str, kept: list[str]) -> None:
    # generated passwords hold , } and ]: outside a flow collection they are the value's own
    out = redact(text)
    for part in ("Cd2", "Ef3", "Gh4"):
        assert part not in out, out
    for word in kept:
        assert word in out, out


def test_a_credential_flag_with_one_dash_has_its_value_redacted() -> None:
    # Go's flag package and Java's tools write long flags with one dash
    out = redact('app -password Xs3cr3tV -v\n  args: ["-token","Xs3cr3tW"]\n'
                 "keytool -list -storepass Xs3cr3tX -keystore ks.jks\n"
                 "java -jar app.jar -api-key=Xs3cr3tY\n")
    for secret in ("Xs3cr3tV", "Xs3cr3tW", "Xs3cr3tX", "Xs3cr3tY"):
        assert secret not in out, out
    assert "-v\n" in out and "-keystore ks.jks" in out


# What Kubernetes and docker generate as names and IDs: identifiers, never encoded values.
HEX = "0123456789abcdef"
GENERATED = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of a pod's suffix
# a pod-template hash: a 32-bit number's decimal digits, each spelt in GENERATED (rand's
# SafeEncodeString: '0' is 48 % 27, '4')
TEMPLATE_HASH = st.integers(0, 2**32 - 1).map(lambda n: "".join(GENERATED[ord(d) % 27]
                                                                 for d in str(n)))
LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uid=st.uuids(), container=st.text(HEX, min_size=12, max_size=12),
       commit=st.text(HEX, min_size=7, max_size=40),
       template_hash=TEMPLATE_HASH,
       suffix=st.text(GENERATED, min_size=5, max_size=5),
       name_part=st.text(LOWER_DIGITS, min_size=8, max_size=16))
def test_generated_names_and_ids_are_kept(uid: object, container: str, commit: str,
                                          template_hash: str, suffix: str,
                                          name_part: str) -> None:
    # about 1 in 300 runs of 8 hex digits decodes to text as base64: a UUID's first part, a
    # container's name were redacted as encoded values
    text = (f"NAME                        READY   STATUS    RESTARTS   AGE\n"
            f"web-{template_hash}-{suffix}   1/1     Running   0          5m\n"
            f"  labels:\n    pod-template-hash: {template_hash}\n"
            f"metadata:\n  name: web-{name_part}\n  uid: {uid}\n"
            f"CONTAINER ID   IMAGE   COMMAND   STATUS   NAMES\n"
            f"{container}   nginx   \"sleep\"   Up 2 seconds   web-{container[:8]}\n"
            f"rollout to {commit} done\n")
    assert redact(text) == text


@pytest.mark.parametrize("name", ["auth-service", "token-refresher", "api-key-rotator",
                                  "session-store", "external-secrets", "web-lkgdsntj"])
@pytest.mark.parametrize("cell", ["Running", "CrashLoopBackOff", "Active", "Bound", "1/1",
                                  "5m12s", "10.0.0.7", "10.0.0.7:8080", "deployed", "<none>",
                                  "2026-12-04T17:00:00Z", "2026-12-04T17:00:00.123456+01:00"])
def test_a_name_beside_what_a_table_shows_of_it_is_kept(name: str, cell: str) -> None:
    # two columns (``-o custom-columns=NAME:...,STATUS:...``) read like ``password  VALUE``
    for text in (f"NAME{' ' * 24}STATUS\n{name:<28}{cell}\n", f"{name}    {cell}\n"):
        assert redact(text) == text


@pytest.mark.parametrize(("text", "secret"), [
    ("auth-service    hunter22\n", "hunter22"),
    ("SENTRY_DSN    0b1c8fe2d9aa4f37\n", "0b1c8fe2d9aa4f37"),
    # base64 of text still read where an identifier would not stand: alone, or with capitals
    (f"{base64.b64encode(b'rx4vy3').decode()}\n", base64.b64encode(b"rx4vy3").decode()),
    (f"key-{base64.b64encode(b'admin1').decode()}\n", base64.b64encode(b"admin1").decode()),
    # in the alphabet of a pod's generated suffix, but no pod-template hash (those are hex)
    (f"{base64.b64encode(b'rnzwipsgi').decode()}\n", base64.b64encode(b"rnzwipsgi").decode()),
    (f"[{base64.b64encode(b'vomvik').decode()}]\n", base64.b64encode(b"vomvik").decode()),
    # an age as kubectl prints it has two units at most, each the next smaller
    ("db-password   167d2d\n", "167d2d"),
    # base64 of 4 or 5 bytes of text standing alone: what ``-o jsonpath`` prints of a ConfigMap
    ("YWRtaW4=\n", "YWRtaW4="), ("cGFzcw==\n", "cGFzcw=="),
    ("db-creds   MTIzNDU=   5d\n", "MTIzNDU="), ('{"conn": "cEBzcyE="}\n', "cEBzcyE="),
    ("map[a:cm9vdA== b:x]\n", "cm9vdA=="), ("conn: dDNzdA==\n", "dDNzdA=="),
    # in the URL-safe alphabet (``~~~~>``, ``p?ss``), also in a query string
    ("conn: fn5-fj4=\n", "fn5-fj4="), ("https://x/?k=cD9zcw==&a=1\n", "cD9zcw=="),
    ("map[a:fn5-fg== b:x]\n", "fn5-fg=="),
    # a checksum's name inside encoded text before it names no checksum (``SHA0MA==``, ``Hp40``)
    ("a: SHA0MA== b: dDNzdA==\n", "dDNzdA=="), ("SHA0MA==,c2hhMQ==\n", "c2hhMQ=="),
])
def test_values_beside_names_and_encoded_text_are_still_redacted(text: str,
                                                                 secret: str) -> None:
    assert secret not in redact(text)


@pytest.mark.parametrize("value", ["Running", "ready", "1/1", "5m12s", "10.0.0.7",
                                   "10.0.0.7:8080"])
@pytest.mark.parametrize("line", [
    "<password>{v}</password>", '<add key="DbPassword" value="{v}"/>',
    "define('DB_PASSWORD', '{v}');", 'ENV["API_TOKEN"] = "{v}"', "'password' => '{v}'",
    "CREATE USER app IDENTIFIED BY '{v}';", 'password = """{v}"""', "requirepass {v}",
    "AUTH {v}", "password    {v}", "setenv DB_PASSWORD {v}", "set -x API_TOKEN {v}",
    "NAME      TOKEN     AGE\nweb       {v}    5d",
])
def test_a_value_a_name_sets_is_redacted_even_when_it_looks_like_a_table_cell(
        line: str, value: str) -> None:
    # only a row of custom columns (a resource's name, then a cell) shows a state beside a
    # name; a value set by a name (XML, SQL, a directive, a column named TOKEN) is the credential
    text = line.format(v=value) + "\n"
    assert value not in redact(text).split("\n", 1)[-1 if "NAME" in line else 0]


@pytest.mark.parametrize("text", [
    "password    <Tr0ub4dor&3\n", "define('DB_PASSWORD', '<Tr0ub4dor&3');\n",
    "auth-service    <Tr0ub4dor&3\n", '<add key="DbPassword" value="<Tr0ub4dor&3"/>\n',
    "<password><Tr0ub4dor&3</password>\n", "<DbPassword><secret</DbPassword>\n",
    "<password>a < b</password>\n", "<settings><token><>x</token></settings>\n",
    "NAME      TOKEN          AGE\nweb       <Tr0ub4dor&3   5d\n",
    "Name      Password\n----      --------\nadmin     <Tr0ub4dor&3\n",
    # a ready count, an age, a port as kubectl prints them: a few digits, not any number
    "auth-service    123456/7890123\n", "auth-service    1234567890s\n",
    "Key            Value\n---            -----\ndb-password    12/2024\n",
    "auth-service    10.0.0.7:12345678901\n",
])
def test_a_credential_shaped_like_a_placeholder_or_a_cell_is_redacted(text: str) -> None:
    # a password may start with ``<``: only kubectl's placeholders (``<none>``) are kept
    assert REDACTED in redact(text)


@pytest.mark.parametrize("text", [
    # a start tag with attributes or a space before its ``>`` (a .NET or Maven settings file)
    '<password type="plain">s3cr3t-Value</password>\n', "<password >s3cr3t-Value</password>\n",
    "<ns:Token\tencrypted=\"no\">s3cr3t-Value</ns:Token>\n",
    # named by its ``key`` or ``name`` attribute (Java's properties XML, Hibernate, Spring)
    '<entry key="db.password">s3cr3t-Value</entry>\n',
    '<property name="hibernate.connection.password">s3cr3t-Value</property>\n',
    "&lt;entry key=&quot;token&quot;&gt;s3cr3t-Value&lt;/entry&gt;\n",
    # a CDATA section holds any character, ``<`` and a letter too
    "<password><![CDATA[s3cr3t-Value<b]]></password>\n",
    "<password><![CDATA[<s3cr3t-Value</x>]]></password>\n",
    # XML escaped as HTML or a log writes it
    "&lt;password&gt;s3cr3t-Value&lt;/password&gt;\n",
    '&lt;password enc="no"&gt;&lt;s3cr3t-Value&lt;/password&gt;\n',
    '{"body": "&lt;db&gt;&lt;password&gt;s3cr3t-Value&lt;/password&gt;&lt;/db&gt;"}\n',
])
def test_an_xml_elements_value_is_redacted_whatever_its_start_tag_holds(text: str) -> None:
    assert "s3cr3t-Value" not in redact(text)


@pytest.mark.parametrize("text", [
    '<description lang="en">a password is needed</description>\n',
    "&lt;b&gt;token&lt;/b&gt; expired\n", '<password hint="x"/>\n<user>bob</user>\n',
    '<entry key="timeout">30</entry>\n<property name="password.length">12</property>\n',
])
def test_xml_naming_no_credential_is_kept(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("rows", [
    "auth-service      Running\ntoken-refresher   CrashLoopBackOff\n",
    "NAME              STATUS\nauth-service      Running\nsecret-store      Pending\n",
    "api-key-rotator   Bound\nsession-token     Pending\n",
])
def test_rows_of_custom_columns_are_not_read_as_a_header(rows: str) -> None:
    # a row (``auth-service   Running``) above another is no header naming a credential
    # column: the name below it was redacted as that column's value
    assert redact(rows) == rows
    assert "hunter22" not in redact(rows + "token-refresher   hunter22\n")


# --------------------------------------------------------------------------- hostile output

HOSTILE = {
    "data-lines": "data:\n" + "  k: v\n" * 2500,
    "deep-indent": "".join(" " * (i % 160) + "data:\n" for i in range(0, 190)),
    "secret-kind-long-line": '{"kind":"Secret",' + '"data":{' * 3000,
    "pem-without-end": "-----BEGIN PRIVATE KEY-----\n" + "A" * 16000,
    "pem-headers": "-----BEGIN " + "A " * 8000,
    "base64-run": "A" * 16384,
    "hex-run": "0" * 16384,
    "percent-run": "%41" * 5400,
    "nested-pairs": "a=" * 8000,
    "key-pairs": "key=" * 4000,
    "env-names": "- name: DB_PASSWORD\n" * 800,
    "basic-run": "Basic " + "A" * 16000,
    "url-userinfo": "http://" + "a:" * 8000,
    "flags": "-p " * 5400,
    "quotes": 'password: "' + "\\" * 16000,
    "escapes": "\x1b[" + "1;" * 8000,
    "jwt-continuations": "eyJabcd\n" + "abcdefghij\n" * 1400,
    "escaped-quotes": '\\"\\u0041\\n' * 1600,
    "escaped-assignments": '"a=\\"' * 3200,
    "open-flows": "data: " + "[{" * 8000,
    "flag-items": '"-p", "' * 2300,
    "flat-objects": "{name: API_TOKEN, " * 900,
    "flow-pairs": "{password: a\n" * 1300,
    "explicit-keys": "? password\n: " * 1300,
    "key-then-blanks": "x" + " " * 16000,
    "value-words": "password=a " + "b " * 8000,
    "value-quotes": "password=" + "a\"" * 8000,
    "words-then-pairs": "token=a " + "b=" * 5400,
    "described-values": "password:\n----\n" + "x\n" * 8000,
    "keys-below": "password:\n" + "- a\n" * 4000,
    "column-pairs": "password x\n" * 1450,
    "netrc-entries": "machine " + "password " * 1800,
    "mysql-flags": "mysql " + "-p " * 5400,
    "user-flags": "-u a:" * 3200,
    "quoted-objects": "{ '" * 5400,
    "binary-line": "a" * 16000 + "\ufffd",
    "quoted-names": "'password', \"" * 1400,
    "sql-passwords": "PASSWORD('" * 1600,
    "key-blocks": "-----BEGIN key-----" * 840,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_output_finishes_and_still_redacts(name: str) -> None:
    out = redact(HOSTILE[name] + "\npassword=hunter2\n")
    assert "hunter2" not in out


# Long output is read fast because each rule first looks for what its matches must hold (a
# credential's word, a tool's name, a token's start) and reads only there: a credential after
# many lines holding none, named in another case (a Kelvin sign reads as a k), or beside a
# value redacted already is still found. One token of each shape alone: no other finds it.
FILLER = "x\n" * 40
PLAIN = "abcdefijklmnopqrstuvwxyz0123456789"  # (holds no token's start; no rule reads it alone)
LOOKED_FOR = {
    "pair-after-lines": (FILLER + "Password = Zq7xK2mP9w\n", "Zq7xK2mP9w"),
    "pair-kelvin-percent": ("x=API_%E2%84%AAEY%3DZq7xK2mP9w\n", "Zq7xK2mP9w"),
    "header-after-lines": (FILLER + "NAME   TOKEN\nweb    Zq7xK2mP9w\n", "Zq7xK2mP9w"),
    "csv-after-lines": (FILLER + "name,password\nbob,Zq7xK2mP9w\n", "Zq7xK2mP9w"),
    "section-after-redacted": ("[REDACTED]\n" * 20 + "[credentials]\nkey = Zq7xK2mP9w\n",
                               "Zq7xK2mP9w"),
    "tool-in-capitals": (FILLER + "REDIS-CLI.EXE -a Zq7xK2mP9w\n", "Zq7xK2mP9w"),
    "tool-list-after-redacted": ('[REDACTED] ["Redis-Cli", "-a", "Zq7xK2mP9w"]\n',
                                 "Zq7xK2mP9w"),
    "tool-sequence-in-capitals": ("command:\n- REDIS-CLI\n- -a\n- Zq7xK2mP9w\n", "Zq7xK2mP9w"),
    "base64-below-redacted": ("[REDACTED]\ncGFzc3dvcmQxMjM0\n", "cGFzc3dvcmQxMjM0"),
    **{f"token-{token.removeprefix('https://')[:7]}": (f"see {token} here\n", token)
       for token in [
        *(aws + "ABCDEFIJKLMNOPQR" for aws in ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA",
                                               "ANVA", "AIPA", "ABIA", "ACCA")),
        *(start + PLAIN for start in (
            "ghp_", "github_pat_", "glpat-", "xoxb-", "xapp-", "rk_test_", "sk_live_",
            "whsec_", "AIza", "ya29.", "npm_", "pypi-", "sk-", "hvs.",
            "https://hooks.slack.com/services/T0000/B0000/",
            "https://discord.com/api/webhooks/1234/")),
        f"SG.{PLAIN}.{PLAIN}", "dop_v1_" + "ab12" * 10, "shpat_" + "ab12" * 8]},
}


@pytest.mark.parametrize("name", list(LOOKED_FOR))
def test_what_a_rule_looks_for_first_hides_no_credential(name: str) -> None:
    text, secret = LOOKED_FOR[name]
    secret = secret.rsplit("/", 1)[-1]  # (of a webhook's address, its token)
    assert secret not in redact(text), name


PIECES = ["password", "pwd", "token", "secret", "key", "data:", "stringData:", "kind: Secret",
          '"kind":"Secret"', '"data":{', "- name: DB_TOKEN", "value:", ":", "=", " ", "\n",
          "  ", '"', "'", "{", "}", "[", "]", ",", "|", ">-", "-----BEGIN PRIVATE KEY-----",
          "-----END PRIVATE KEY-----", "eyJhbGciOi", ".", "%2E", "%", "Basic ", "Bearer ",
          "Authorization:", "://", "@", "-p ", "--password=", "\x1b[", "\x1b]", "\u200b",
          "\r", "\t", "QUJD", "0a1b", "\\", '"""', "'''", "|", ";", "NAME  TOKEN",
          "name,password", "a:b@", "\uff1a", "----  ---", "credentials:", "  value:"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=300))
def test_any_composition_of_hostile_pieces_is_redacted_without_error(pieces: list[str]) -> None:
    out = redact("".join(pieces) + "\npassword=hunter2\n")
    assert "hunter2" not in out
    assert "\x1b" not in out and "\u200b" not in out and "\r" not in out


@given(st.lists(st.sampled_from(['{', '}', '"a{b" ', "'c{' ", '"', "'", " ", ",", ":", "[",
                                  "\\", "\n", "x"]), max_size=60))
def test_an_environment_entry_after_braces_and_quotes_of_any_kind_is_redacted(
        noise: list[str]) -> None:
    # (an entry as compact JSON; what comes before it opens, closes and quotes at random)
    out = redact("".join(noise) + ' {"name":"API_TOKEN","value":"Zq7xK2mP9w"}\n')
    assert "Zq7xK2mP9w" not in out


# A value that is a text of its own (a config file in a ConfigMap, a command line in an
# annotation, an env value holding an assignment): the rules that read a line from its start
# read it too, wherever the value is written and however it is quoted or escaped.
CONFIG_VALUES = [
    "machine db.example.com login u password {}",
    "requirepass {}",
    "masterauth {}\nport 6379",
    "db.example.com:5432:*:app:{}",
    "user,password\nbob,{}",
    "--password {}",
    "REDIS_CONF=requirepass {}",
    "[client]\npassword={}",
    "Bearer abcdefghijklmnop\nrequirepass {}",  # (a rule reading the escape as the token's)
    # a value whose first line was redacted before (a token's): its other lines are read too
    "[REDACTED]\nrequirepass {}",
    "[REDACTED] x\ndb.example.com:5432:*:app:{}",
]
# what a container cannot hold of a value: a plain value is one line; a plain flow item holds
# no comma; a single-quoted shell word no single quote; a YAML document in a JSON string is
# read one level down, a line break (a string's in a string's) or an assignment (a value of
# its own) two levels down
REFUSED = {"yaml-plain": "\n", "env-value": "\n", "env-value-then-logfmt": "\n",
           "yaml-tagged-plain": "\n", "yaml-in-json": "\n=", "yaml-flow-in-json": "\n=",
           "yaml-no-space-in-json": "\n=", "yaml-tagged-in-json": "\n=",
           "yaml-flow-plain": "\n,", "yaml-flow-list": "\n", "yaml-flow-top": "\n",
           "shell-export": "\n'", "shell-escaped": "\n", "no-space": "\n",
           "yaml-in-json-string-alone": "\n="}
VALUE_CONTAINERS: dict[str, Callable[[str], str]] = {
    "yaml-quoted": lambda v: "kind: ConfigMap\ndata:\n  app.conf: " + json.dumps(v) + "\n",
    "yaml-plain": lambda v: "kind: ConfigMap\ndata:\n  app.conf: " + v + "\n",
    "yaml-item": lambda v: "args:\n- " + json.dumps(v) + "\n",
    "json": lambda v: json.dumps({"kind": "ConfigMap", "data": {"app.conf": v}}, indent=2),
    "json-compact": lambda v: json.dumps({"data": {"app.conf": v, "b": "c d"}}),
    "json-in-annotation": lambda v: json.dumps(
        {"metadata": {"annotations": {"last": json.dumps({"data": {"app.conf": v}})}}}),
    "env-value": lambda v: "REDIS_ARGS=" + v + "\n",
    "json-array": lambda v: json.dumps({"args": ["redis-server", v]}, indent=2),
    "json-array-compact": lambda v: json.dumps({"args": [v, "x"]}),
    # a plain key of any characters but ``: ``; a tag or an anchor before the value
    "yaml-odd-key": lambda v: "data:\n  app.conf@x+y: " + json.dumps(v) + "\n",
    "yaml-colon-key": lambda v: 'data:\n  "app.conf:x": ' + json.dumps(v) + "\n",
    "yaml-tagged": lambda v: "data:\n  app.conf: !!str " + json.dumps(v) + "\n",
    "yaml-tagged-plain": lambda v: "data:\n  app.conf: !!str &a " + v + "\n",
    "yaml-tagged-item": lambda v: "args:\n- !secret " + json.dumps(v) + "\n",
    # a flow collection's items, with or without keys, quoted or not
    "yaml-flow-map": lambda v: "data: {app.conf: " + json.dumps(v) + ", b: 1}\n",
    "yaml-flow-plain": lambda v: "data: {b: 1, app.conf: " + v + "}\n",
    "yaml-flow-list": lambda v: "args: [x, '" + v + "']\n",
    "yaml-flow-line": lambda v: "- {app.conf: " + json.dumps(v) + "}\r\n",
    "yaml-flow-top": lambda v: "[x, '" + v + "']\n",
    # a shell's assignments (``declare -x``'s, ``export``'s), logfmt's pairs
    "shell-declare": lambda v: "declare -x APP_CONF=" + json.dumps(v) + "\n",
    "shell-export": lambda v: "export APP_CONF='" + v + "'\n",
    "shell-escaped": lambda v: "export APP_CONF=" + v.replace(" ", "\\ ") + "\n",
    "logfmt": lambda v: "level=info app.conf=" + json.dumps(v) + " ts=2024-05-01T10:00:00Z\n",
    "env-value-then-logfmt": lambda v: "APP_CONF=" + v + ' note="a b"\n',
    # a YAML document in a JSON string (its quotes escaped), the value quoted, in a flow
    # collection, without a space, behind a tag
    "yaml-in-json": lambda v: json.dumps({"app.yaml": "x: " + json.dumps(v)}),
    "yaml-flow-in-json": lambda v: json.dumps({"app.yaml": "x: {a: " + json.dumps(v) + "}"}),
    "yaml-no-space-in-json": lambda v: json.dumps({"app.yaml": "x:" + json.dumps(v)}),
    "yaml-tagged-in-json": lambda v: json.dumps({"app.yaml": "x: !!str &a " + json.dumps(v)}),
    # a name and its value with no space between (a config dump's)
    "no-space": lambda v: "app.conf:" + v + "\n",
    # (characters of Unicode's private use, which reading values could have used itself)
    "beside-private-use": lambda v: "kind: ConfigMap\ndata:\n  a: \"\ue000\ue001\ue002\ue003"
                                    "\"\n  app.conf: " + json.dumps(v) + "\n",
    # a JSON string alone on its line, no key before it, at the line's start or not
    "json-string-alone": lambda v: json.dumps(v) + "\n",
    "json-string-alone-indented": lambda v: "  " + json.dumps(v) + "\n",
    "yaml-in-json-string-alone": lambda v: json.dumps("x: {a: " + json.dumps(v) + "}") + "\n",
}


@pytest.mark.parametrize(("value", "container"), [
    (v, c) for v in CONFIG_VALUES for c in VALUE_CONTAINERS
    if not any(char in v for char in REFUSED.get(c, ""))])
def test_a_value_holding_config_text_is_read_as_a_text_of_its_own(value: str,
                                                                   container: str) -> None:
    text = VALUE_CONTAINERS[container](value.format(PASSWORD))
    out = redact(text)
    assert PASSWORD not in out and json.dumps(PASSWORD)[1:-1] not in out
    assert "app.conf" in out or "app.conf" not in text


@pytest.mark.parametrize("document", [
    {"token": {"a": {"b": PASSWORD}}},
    {"auth": {"current": {"value": PASSWORD}}},
    {"credentials": {"db": {"x": PASSWORD}}},
    {"spec": {"redis": {"auth": {"password": {"value": PASSWORD}}}}},
])
@pytest.mark.parametrize("compact", [False, True])
def test_a_json_document_in_an_annotation_is_read_whole(document: dict[str, object],
                                                        compact: bool) -> None:
    # (a document written with spaces after its colons, or none, as kubectl writes it)
    inner = json.dumps(document, separators=(",", ":") if compact else None)
    for outer in (json.dumps({"metadata": {"annotations": {"x": inner}}}, indent=2),
                  "metadata:\n  annotations:\n    x: " + json.dumps(inner) + "\n"):
        assert PASSWORD not in redact(outer)


# Tools whose own flags or positions take a password, read after the tool's name (in a
# process list, a shell history, a pod's command line); the same letters elsewhere are kept.
@pytest.mark.parametrize("line", [
    "redis-cli -h cache -a {} ping",
    "/usr/bin/valkey-cli -a '{}' info",
    "sqlcmd -S db -U sa -P {}",
    "ldapsearch -x -D cn=admin,dc=x -w {} -b dc=x",
    "ldapmodify -x -w{} -f change.ldif",
    "zip -P {} backup.zip dump.sql",
    "openssl enc -aes-256-cbc -k {} -in f",
    "ipmitool -I lanplus -H bmc -U admin -P {} power status",
    "snmpwalk -v2c -c {} switch1",
    "mosquitto_pub -h mq -u app -P {} -t t -m x",
    "smbclient //files/share -U bob%{}",
    "lftp -u bob,{} ftp://files",
    "xfreerdp /u:bob /p:{} /v:host",
    "sqlplus scott/{}@orcl",
    "expdp 'system/{}' directory=d",
    "htpasswd -b /etc/nginx/.htpasswd bob {}",
    "htpasswd -nbB bob \"{}\"",
    "rabbitmqctl add_user bob {}",
    "vault login {}",
    "net user bob {} /add",
    "echo {} | docker login -u bob --password-stdin registry.example.com",
    "printf '%s' '{}' | helm registry login reg --password-stdin",
    "cat notes | echo bob:{} | chpasswd",
    "htpasswd -Bbn testuser {} > auth/htpasswd",
    "htpasswd -b -c /etc/apache2/.htpasswd user {} 2>&1",
    "    Readiness:  exec [redis-cli -a {} ping] delay=0s timeout=1s",
    'command: ["redis-cli", "-a", "{}", "ping"]',
    'HEALTHCHECK CMD ["redis-cli","-a","{}","ping"]',
    'bash -c "echo {} | docker login --password-stdin"',
    "rabbitmqctl -n rabbit@host add_user bob {}",
    "rman target sys/{}@orcl",
    "smbclient --user=bob%{} //files/share",
    "NET USER bob {} /add",
    "net.exe user /add bob {}",
    "ldappasswd -x -W -s {} uid=bob,dc=x",
    # another tool's name as a host's, a file's or a database's: read on past it
    "redis-cli -h mariadb -a {} ping", "sqlcmd -S mysql -U sa -P {}",
    "zip -r mysql.zip mysql -P {}", "ipmitool -H vault -U admin -P {} power status",
    # a container's command or a probe's exec as kubectl get -o yaml prints it
    "livenessProbe:\n  exec:\n    command:\n    - redis-cli\n    - -a\n    - {}\n    - ping",
    'command:\n- sqlcmd\n- -S\n- db\n- -P\n- "{}"',
    # kubectl describe pod: a container's command and arguments one a line (any indentation,
    # CRLF, quoted), the arguments read on from the command; a credential flag's next line
    "    Command:\n      redis-cli\n      -a\n      {}\n      ping\n    State:  Running",
    "    Command:\n      redis-server\n    Args:\n      --requirepass\n      {}",
    "\tCommand:\r\n\t\tredis-cli\r\n\tArgs:\r\n\t\t-a\r\n\t\t'{}'\r\n",
    "    Args:\n      --password\n      {}\n    Ready:  True",
    "    Args:\n      mysql\n      -uroot\n      -p{}",
    # no tool named (the image's entrypoint runs it), items indented by tabs, an empty one
    "    Args:\n      -a\n      {}\n    State:  Running",
    "    Command:\n      redis-cli\n    Args:\n\t-a\n\t{}",
    "    Command:\n      redis-cli\n\n      -a\n      {}",
    # a line continued by a backslash (the password on any of its lines)
    "redis-cli \\\n  -a {} ping",
    "mysql -u root \\\r\n  -p{} db",
    "docker login -u me -p \\\n\t{} registry.example.com",
    "\tredis-cli \\\n\t\t-h cache \\\n\t\t-a \"{}\" \\\n\t\tping",
    "command:\n- mysql\n- -uroot\n- -p{}",
    "echo \\\n  {} | docker login --password-stdin",
    "app --password=\\\n  {}",
    # here-strings and here-documents given to a password reader, or to its pipeline
    "docker login --password-stdin <<< {}",
    "vault login - <<<'{}'",
    'docker login -u me --password-stdin <<<"{}"',
    "docker login -u me --password-stdin <<EOF\n{}\nEOF\necho done",
    "cat <<-'END' | docker login --password-stdin\n\t{}\n\tEND",
    "cat <<< {} | docker login --password-stdin",
    # commands between the echo and the reader; other readers of a secret on their input
    "echo {} | tee f | docker login --password-stdin",
    "echo {} |& docker login --password-stdin", "echo {} |\n  docker login --password-stdin",
    # written to a file the reader's pipeline reads
    "echo {} > /tmp/p; cat /tmp/p | docker login --password-stdin",
    "echo {} >> /tmp/p && cat /tmp/p | docker login --password-stdin",
    "printf '%s' {} | tee /tmp/p; cat /tmp/p | docker login --password-stdin",
    "cd /x && printf '%s' {} | tr -d '\\n' | docker login -u me --password-stdin",
    "echo {} | sudo -S apt-get update",
    "echo {} | gh auth login --with-token",
    "echo {} | vault login -",
    "echo {} | kubectl create secret generic s --from-file=p=/dev/stdin",
    "echo {} | docker secret create db -", "echo {} | podman secret create db -",
    "echo {} | vault kv put secret/app password=-",
    "kubectl -n vault create secret generic s --from-file=p=/dev/stdin <<EOF\n{}\nEOF",
    "echo {} | gcloud auth activate-service-account --key-file=-",
    # the same inside a ConfigMap's values
    "data:\n  login.sh: |\n    docker login -u me \\\n      --password-stdin <<< {}",
    '{{"data": {{"probe.sh": "redis-cli \\\\\\n  -a {} ping"}}}}',
    '{{"data": {{"login.sh": "docker login --password-stdin <<EOF\\n{}\\nEOF\\n"}}}}',
    # a quote then a bracket or a comma inside the value, quoted or bare (as ``ps`` and
    # ``kubectl describe`` print it): no end of a string the command line is written in
    "redis-cli -a 'ab\",{}' ping",
    "redis-cli -a 'Zq7\"}}{}' ping",
    "    command:\n    - redis-cli\n    - -a\n    - 'xyz\",{}'",
    "echo 'Zq7\"]{}' | docker login -u u --password-stdin",
    "mysql -uroot -p'Zq7\",{}' db",
    "cat <<EOF | docker login --password-stdin\nZq7\",{}\nEOF",
    "    Command:\n      redis-cli\n      -a\n      Zq7',{}\n",
    "redis-cli -a Zq7\"}}{} ping",
    'x="a" redis-cli -a \'Zq7"}}{}\' ping',
    # a value starting with what reads as redacted already; a YAML flow sequence's items
    "docker login --password-stdin <<< [REDACTED]{}",
    "redis-cli -a '[REDACTED][REDACTED]{}' ping",
    "x: [redis-cli, -a, {}]",
    "command: ['redis-cli', '-a', '{}', ping]",
    # a list of ``net user``'s words with one of its options; openssl's ``pass:`` source
    "['net', 'user', 'bob', '{}', '/add']",
    "openssl enc -passin pass:{} -in f", "openssl enc -pass 'pass:{}' -in f",
    # the second here-document of a command line (the reader's input), or of its feed
    "docker login --password-stdin <<A <<B\nx1\nA\n{}\nB\necho done",
    "cat <<A <<-'B' | docker login --password-stdin\nx1\nA\n\t{}\n\tB\necho done",
])
def test_a_tools_own_password_argument_is_redacted(line: str) -> None:
    # (a process list prints an argument as it was given: ``&`` inside it is no separator)
    out = redact(line.format(PASSWORD) + "\n")
    assert not any(part in out for part in PASSWORD.split("&")) and REDACTED in out


@pytest.mark.parametrize("line", [
    "ssh -P 2222 host", "ls -a -l", "zip -r backup.zip dir", "redis-cli -h cache ping",
    "sqlplus /nolog", "sqlplus / as sysdba", "vault login -method=oidc", "net user bob",
    "echo hello | grep h", "openssl x509 -in cert.pem -noout -text", "rabbitmqctl list_users",
    # a variable, a placeholder, help text: no value
    'echo "$REGISTRY_PASSWORD" | docker login -u ci --password-stdin registry.example.com',
    "redis-cli -a <password> ping", "Run vault login to authenticate", "vault login [options]",
    # one-dash long options, ldapsearch's scope, sql as a word, a redirection
    "openssl req -new -key key.pem -out req.csr", "influx -type influxql",
    "ldapsearch -x -LLL -s base -b '' namingContexts", "Loaded sql migrations/0001_init.sql",
    "args:\n- redis-cli\n- -h\n- cache\n- ping",
    'echo "Logging in..." | tee -a log; docker login --password-stdin < pw',
    # a server's command one argument a line; a flag naming no credential's value
    "    Command:\n      nginx\n      -g\n      daemon off;\n    Args:\n      --port\n      8080"
    "\n    State:          Running",
    "    Args:\n      --token-file\n      /var/run/secrets/token\n      -v\n      2",
    "ls -la \\\n  /tmp \\\n  /var",
    # pipes and here-documents giving no password reader anything; a variable given to one
    "echo hello | tee f", "echo hello | tee f | grep h",
    "cat <<EOF > /etc/motd\nhello world\nEOF", "echo done || docker login --password-stdin < pw",
    'docker login --password-stdin <<< "$REGISTRY_PASSWORD"',
    "echo $TOKEN | gh auth login --with-token",
    "echo hello; cat pw | docker login --password-stdin",
    # ``-`` for the input of a command naming no credential (a namespace's, a manager's name)
    "kubectl -n vault apply -f - <<EOF\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n"
    "  name: vault-auth\nEOF",
    "kubectl -n secret-store apply -f - <<EOF\nkind: ServiceAccount\nEOF",
    'echo "apiVersion: v1" | kubectl apply --field-manager=keycloak-operator -f -',
    'echo "apiVersion: v1" | kubectl apply -n vault -f -',
    "[INFO] [vault] started", "tags: [zip, tar, net]", "x: [redis-cli, -a, <password>]",
    # openssl's password read from a variable, a file, a descriptor, the input
    "openssl enc -passin env:VAR -in f", "openssl rsa -passin file:/etc/pw -passout fd:3",
    "openssl enc -d -pass stdin -in f",
])
def test_the_same_letters_elsewhere_are_kept(line: str) -> None:
    assert redact(line + "\n") == line + "\n"


# ``kubectl describe`` of a custom resource prints its fields' names as words (``Client
# Secret:``): a credential's value below such a name is redacted, a reference's fields kept.
@pytest.mark.parametrize(("text", "kept"), [
    ("Spec:\n  Admin Password:\n    {}\n  Replicas:  3\n", "Replicas:  3"),
    ("Spec:\n  Client Secret:\n    Value:  {}\n  Name:  web\n", "Name:  web"),
    ("Spec:\n  API Keys:\n    Primary:    {}\n    Secondary:  {}\n  Replicas:  3\n",
     "Replicas:  3"),
    ("Spec:\n  Client Secret:\n    Secret Key Ref:\n      Name:  db\n      Key:   password\n"
     "  Token:  {}\n", "Key:   password"),
])
def test_a_credential_below_a_field_name_of_words_is_redacted(text: str, kept: str) -> None:
    out = redact(text.format(PASSWORD, PASSWORD))
    assert PASSWORD not in out and kept in out


def test_a_sentence_ending_in_a_colon_is_no_field_name() -> None:
    text = "E1207 failed to refresh token:\n  at client.go:12\n"
    assert redact(text) == text


# --------------------------------------------------------------------------- a second review
# Each case is a class of output that leaked before: the values of a Secret in a shape the line
# reader did not follow, tokens known by their shape only, and credentials behind escapes.

B64 = base64.b64encode(PASSWORD.encode()).decode()
B64_2 = base64.b64encode(SPACED.encode()).decode()
RANDOM_KEY = base64.b64encode(bytes(range(7, 255, 7))).decode()  # binary key material
GITHUB = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"
SLACK = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
LAST_APPLIED = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                           "stringData": {"conn": SPACED}}, separators=(",", ":"))

SHAPES = {
    # a Secret's values however the structure around them is written
    "flow-data": (f"kind: Secret\ndata: {{conn: {B64}, other: {RANDOM_KEY}}}\n",
                  [B64, RANDOM_KEY]),
    "flow-stringdata": (f"kind: Secret\nstringData: {{conn: {PASSWORD}, b: '{SPACED}'}}\n",
                        [PASSWORD, SPACED]),
    "flow-stringdata-multiline": (f"stringData: {{\n  conn: {PASSWORD},\n  b: \"{SPACED}\"\n}}\n",
                                  [PASSWORD, SPACED]),
    "anchored-block": (f"kind: Secret\nstringData: &values\n  conn: {PASSWORD}\n", [PASSWORD]),
    "anchored-scalar": (f"defaults:\n  conn: &c {PASSWORD}\n  db_password: *c\n", [PASSWORD]),
    "tab-indented": (f"kind: Secret\ndata:\n\tconn: {B64}\n", [B64]),
    "raw-api-list": (json.dumps({"kind": "SecretList", "items": [
        {"metadata": {"name": "a"}, "data": {"conn": B64, "key": RANDOM_KEY}}]},
        separators=(",", ":")), [B64, RANDOM_KEY]),
    "json-escaped-key": ('{"kind":"Secret","string\\u0044ata":{"conn":"' + PASSWORD + '"}}',
                         [PASSWORD]),
    "json-escaped-quotes": ('{"a":"x\\u0022,\\u0022password\\u0022:\\u0022' + PASSWORD + '"}',
                            [PASSWORD]),
    "last-applied-in-json": (json.dumps({"kind": "Secret", "metadata": {"annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": LAST_APPLIED}}}, indent=4),
        [SPACED]),
    # values printed bare (jsonpath, go-template, custom columns), whatever the command
    "bare-values": (f"{B64}\n{B64_2}\n", [B64, B64_2]),
    "custom-columns": (f"NAME   DATA\ndb     map[conn:{B64} key:{RANDOM_KEY}]\n",
                       [B64, RANDOM_KEY]),
    "cut-short": (f"kind: Secret\ndata:\n  conn: {B64_2[:15]}", [B64_2[:15]]),
    # environment entries and arguments in any order and shape
    "value-before-name": (f"env:\n- value: {PASSWORD}\n  name: API_TOKEN\n- name: LOG\n"
                          "  value: debug\n", [PASSWORD]),
    "flag-then-item": (f"args:\n- --token\n- {PASSWORD}\n- --db-password\n- '{SPACED}'\n",
                       [PASSWORD, SPACED]),
    "flag-then-json-item": (f'"args": [\n    "--token",\n    "{PASSWORD}"\n]', [PASSWORD]),
    "continued-plain": (f"password: {PASSWORD[:8]}\n  {PASSWORD[8:]}-more\n", [PASSWORD[8:]]),
    "continued-quoted": (f'    - name: DB_PASS\n      value: "{PASSWORD[:8]}\\\n        '
                         f'{PASSWORD[8:]}"\n', [PASSWORD[8:]]),
    "credential-flow-sequence": (f"tokens: [{PASSWORD}, {SPACED}]\n", [PASSWORD, SPACED]),
    "env-output-spaces": (f"API_TOKEN={SPACED}\nHOME=/root\n", [SPACED]),
    "docker-inspect-env": (json.dumps({"Config": {"Env": [f"DB_PASSWORD={SPACED}",
                                                          f"HOOK={GITHUB}"]}}, indent=4),
                           [SPACED, GITHUB]),
    "xml": (f'<password>{PASSWORD}</password>\n<add key="DbPassword" value="{SPACED}"/>',
            [PASSWORD, SPACED]),
    # credentials known by their shape, under any name
    "token-shapes": (f"A={GITHUB}\nB={SLACK}\nC=AKIAIOSFODNN7EXAMPLE\nD=glpat-abcdefghij0123456789"
                     "\nE=sk_live_4eC39HqLyjWDarjtT1zdp7dc\nF=AIzaSyD-abcdefghijklmnopqrstuvwxyz12345"
                     "\nG=https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX\n",
                     [GITHUB, SLACK, "AKIAIOSFODNN7EXAMPLE", "glpat-abcdefghij0123456789",
                      "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "AIzaSyD-abcdefghijklmnopqrstuvwxyz12345",
                      "XXXXXXXXXXXXXXXXXXXXXXXX"]),
    "password-hashes": ("admin:$apr1$abcdefgh$ABCDEFGHIJKLMNOPQRSTUV\n"
                        "root:$6$rounds=5000$saltsalt$0123456789abcdefABCDEF\n",
                        ["ABCDEFGHIJKLMNOPQRSTUV", "0123456789abcdefABCDEF"]),
    "url-password-with-at": (f"https://user:p@ss{PASSWORD}@host/x", [PASSWORD]),
    "url-token-as-user": (f"https://{GITHUB[4:]}@github.com/org/repo.git", [GITHUB[4:]]),
    "url-signature": (f"https://a.blob.core.windows.net/c?sv=2020&sig={B64}", [B64]),
    "helm-values-creds": (f"registry:\n  creds: {PASSWORD}\n", [PASSWORD]),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_credentials_in_every_shape_are_redacted(name: str) -> None:
    text, secrets = SHAPES[name]
    out = redact(text)
    for secret in secrets:
        assert not leaks(out, secret), out


def test_private_key_material_without_its_pem_lines_is_redacted(tmp_path: Path) -> None:
    # a key's body printed without its BEGIN/END lines, and OpenSSH's 70-column wrapping
    der = base64.b64encode(b"0\x82\x04\xa4" + bytes(range(256)) * 4).decode()
    body = "\n".join(der[i:i + 64] for i in range(0, len(der), 64))
    openssh = base64.b64encode(b"openssh-key-v1\x00" + bytes(range(255, 0, -1))).decode()
    wrapped = "\n".join(openssh[i:i + 70] for i in range(0, len(openssh), 70))
    out = redact(f"{body}\n---\n{wrapped}\n")
    assert not leaks(out, der[:64]) and not leaks(out, openssh[:70]), out


def test_public_material_is_kept() -> None:
    cert_body = base64.b64encode(b"0\x82\x01\x0a" + bytes(range(200))).decode()
    cert = f"-----BEGIN CERTIFICATE-----\n{cert_body}\n-----END CERTIFICATE-----\n"
    indented = cert.rstrip().replace("\n", "\n    ")
    text = (f"apiVersion: v1\ndata:\n  ca.crt: |\n    {indented}\n"
            f"kind: ConfigMap\n---\ncertificate-authority-data: "
            f"{base64.b64encode(cert.encode()).decode()}\n"
            "authorized: ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl jane@laptop\n"
            "annotations: V1beta1ResourceSliceList Question bindings 7d9c6b5d4f\n")
    assert redact(text) == text


POD = textwrap.dedent("""\
    apiVersion: v1
    kind: Pod
    metadata:
      annotations:
        checksum/config: 3f2504e04f8911d39a0c0305e82c3301a1b2c3d4e5f60718293a4b5c6d7e8f90
      generateName: web-7d9c6b5d4f-
      labels:
        pod-template-hash: 7d9c6b5d4f
      name: web-7d9c6b5d4f-x2x9k
      uid: 7c9e6679-7425-40de-944b-e07fc1f90ae7
    spec:
      containers:
      - args:
        - --log-level
        - debug
        image: registry.example.com/web@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c
        volumeMounts:
        - mountPath: /var/run/secrets/kubernetes.io/serviceaccount
          name: kube-api-access-8x2kp
      nodeName: ip-10-0-1-23.eu-west-1.compute.internal
    status:
      containerStatuses:
      - containerID: containerd://4bd5e3c4f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5
        ready: true
    """)


def test_an_ordinary_pod_is_kept_as_it_is() -> None:
    assert redact(POD) == POD


@pytest.mark.parametrize("argv", [
    "kubectl get secret db -o jsonpath={.data.password}",
    "kubectl get secrets -ojsonpath={.items[0].data}",
    "kubectl get secret/db -o=go-template={{.data.password|base64decode}}",
    "kubectl get secret db --template={{.data.password}}",
    "kubectl get configmaps,secrets -o custom-columns=DATA:.data",
    "kubectl get Secrets.v1. -n apps --output jsonpath-as-json={.items}",
    # refused before it runs (LocalFile); redaction withholds it all the same, in depth
    "kubectl get -f manifests.yaml -o go-template-file=t.tmpl",
    "kubectl create secret generic db --from-literal=a=b --dry-run=client -o jsonpath={.data}",
])
def test_secrets_printed_in_a_format_no_rule_can_read_are_withheld_whole(argv: str) -> None:
    # go-template's base64decode prints the plain value, with nothing around it to go by
    out = redact(f"{PASSWORD}\n", command=argv.split())
    assert out == WITHHELD and PASSWORD not in out


@pytest.mark.parametrize("argv", [
    "kubectl get secret db -o yaml", "kubectl get secrets -o json", "kubectl get secrets",
    "kubectl describe secret db", "kubectl get secret db -o name",
    "kubectl get pods -o jsonpath={.items[*].metadata.name}",
])
def test_readable_output_of_secrets_and_other_templates_is_redacted_not_withheld(
        argv: str) -> None:
    assert redact("web-1 web-2\n", command=argv.split()) == "web-1 web-2\n"
    assert PASSWORD not in redact(f"kind: Secret\nstringData:\n  a: {PASSWORD}\n",
                                  command=argv.split())


ENV_SECRET = "Pq7!x 9Zr#Lw2&Vb"
FLAG_SECRET = "kT4@m 8Yw%Jc3*Hn"
POD_WITH_CREDENTIALS = {"apiVersion": "v1", "kind": "List", "items": [{
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
    "spec": {"containers": [{"name": "web", "image": "web:1", "args": [
        "--log-level", "debug", "--client-secret", FLAG_SECRET, f"--db-password={FLAG_SECRET}",
        "-p", FLAG_SECRET], "env": [
        {"name": "LOG_LEVEL", "value": "debug"}, {"value": ENV_SECRET, "name": "API_TOKEN"},
        {"name": "REPLICAS", "value": "3"},
        {"name": "OAUTH_CLIENT_SECRET", "value": ENV_SECRET}]}]},
}]}
SECRET_WITH_APPLIED = {"apiVersion": "v1", "kind": "Secret", "metadata": {
    "name": "db", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(
        {"apiVersion": "v1", "kind": "Secret", "stringData": {"conn": ENV_SECRET}},
        separators=(",", ":")) + "\n"}}, "stringData": {"conn": ENV_SECRET}, "type": "Opaque"}


@pytest.mark.parametrize("style", [
    {"default_flow_style": False}, {"default_flow_style": True, "width": 40},
    {"default_flow_style": True, "width": 10000}, {"canonical": True},
    {"width": 20, "default_style": '"'}, {"width": 20, "default_style": "'"},
    {"width": 20}, "json-compact", "json-indented", "json-ascii",
], ids=str)
def test_every_serialisation_of_pods_and_secrets_loses_its_credentials(
        style: dict[str, object] | str) -> None:
    # env entries in either order and one line each, flags and their values as items of
    # their own or joined, folded scalars, explicit keys, an annotation holding escaped JSON
    import yaml

    for obj in (POD_WITH_CREDENTIALS, SECRET_WITH_APPLIED):
        if style == "json-compact":
            text = json.dumps(obj, separators=(",", ":"))
        elif style == "json-indented":
            text = json.dumps(obj, indent=2)
        elif style == "json-ascii":
            text = json.dumps(obj).replace("e", "\\u0065")
        else:
            assert isinstance(style, dict)
            text = yaml.safe_dump(obj, sort_keys=False, **style)  # type: ignore[call-overload]
        out = redact(text)
        for secret in (ENV_SECRET, FLAG_SECRET):
            assert not leaks(out, secret), out
        assert obj is SECRET_WITH_APPLIED or ("debug" in out and "web" in out), out


def test_a_value_redacted_in_part_by_one_rule_is_redacted_whole_by_the_next() -> None:
    # the random-looking head of the value goes first; the structure must not stop there
    value = "G8OChJqMexTZaMmdO4F1P!_SZ3AkJM77_64XxQ"
    applied = json.dumps({"kind": "Secret", "stringData": {"k": value}}, separators=(",", ":"))
    out = redact(json.dumps({"kind": "Secret", "metadata": {"annotations": {"a": applied}}}))
    assert "SZ3AkJM77" not in out, out


@pytest.mark.parametrize("text", [
    '{"env":[{"name":"DB","valueFrom":{"secretKeyRef":{"name":"db-creds","key":"password"}}}]}',
    '{"spec":{"passwordSecretRef":{"name":"db","key":"password"}}}',
])
def test_a_reference_s_fields_stay_in_compact_json(text: str) -> None:
    # a reference says where a value is: its key stays, as on block YAML's lines
    assert '"key":"password"' in redact(text)


@pytest.mark.parametrize(("text", "secrets", "kept"), [
    ('{"spec":{"apiKeys":["K1-a9f3","K2-b8e4"]}}', ["K1-a9f3", "K2-b8e4"], ["spec"]),
    ('{"credentials":{"user":"bob","value":"X-c7d2"}}', ["X-c7d2"], []),
    ('{"auth":{"type":"basic","key":"X-c7d2"}}', ["X-c7d2"], []),
    ('{"password":{"current":"A-e6f1","previous":"X-c7d2"}}', ["A-e6f1", "X-c7d2"], []),
    ("spec: {apiKeys: [a-k1x9, b-k2y8]}", ["a-k1x9", "b-k2y8"], ["spec"]),
    ("auth:\n  passwords: [p1-z7q2, p2-w3r5]\n", ["p1-z7q2", "p2-w3r5"], []),
    ('{"token":{"rotation":{"old":"O-m4n8","new":"N-p5q9"},"user":"carol"}}',
     ["O-m4n8", "N-p5q9"], ["carol"]),
    # an annotation holding the object as applied (kubectl apply): compact JSON in a string
    # a plain scalar with a bracket in it (Go's %v, hand-written text) is no key's own value
    ("spec: {auth: {user: a[b, value: X-c7d2, current: Y-c8}, replicas: 3}",
     ["X-c7d2", "Y-c8"], ["spec"]),
    ("metadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n"
     '      {"apiVersion":"example.com/v1","kind":"Db","spec":{"adminPasswords":'
     '["P1-h8j2","P2-k9l3"],"replicas":3}}\nspec:\n  adminPasswords:\n  - P1-h8j2\n'
     "  - P2-k9l3\n  replicas: 3\n", ["P1-h8j2", "P2-k9l3"], ["replicas"]),
], ids=["json-list", "json-object", "json-auth", "json-rotation", "flow-list",
        "flow-list-below", "nested-objects", "bracket-in-a-scalar", "last-applied"])
def test_a_credential_key_s_whole_collection_is_redacted_on_one_line_too(
        text: str, secrets: list[str], kept: list[str]) -> None:
    """A collection as a credential key's value, in compact JSON or flow style: every value in
    it, not its first member alone; the scalars of keys that name no value stay."""
    out = redact(text)
    for secret in secrets:
        assert secret not in out, out
    for word in kept:
        assert word in out, out


KUBECONFIG_WITH_CREDENTIALS = {"apiVersion": "v1", "kind": "Config", "users": [
    {"name": "oidc", "user": {"auth-provider": {"config": {
        "id-token": ENV_SECRET, "refresh-token": FLAG_SECRET, "client-id": "web"}}}},
    {"name": "basic", "user": {"username": "admin", "password": ENV_SECRET}},
    {"name": "cloud", "user": {"client-key-data": FLAG_SECRET, "token": ENV_SECRET}}]}


@pytest.mark.parametrize("style", [
    {"default_flow_style": True, "width": 30}, {"default_flow_style": True, "width": 10000},
    {"canonical": True}, {"width": 15, "default_style": '"'}, {"width": 15},
], ids=str)
def test_every_serialisation_of_a_kubeconfig_loses_its_credentials(
        style: dict[str, object]) -> None:
    # credential keys in flow mappings (plain values with spaces, folded over lines) and as
    # YAML's explicit keys (`? !!str "password"` / `: !!str "..."`)
    import yaml

    out = redact(yaml.safe_dump(KUBECONFIG_WITH_CREDENTIALS, **style))  # type: ignore[call-overload]
    for secret in (ENV_SECRET, FLAG_SECRET):
        assert not leaks(out, secret), out
    assert "admin" in out and "web" in out


def test_redaction_of_ordinary_text_keeps_its_lines_and_is_idempotent() -> None:
    # a shell's line continuation is no escaped YAML line break, and [REDACTED] is no flow
    # sequence: neither may make the decoded second reading win over what was printed
    text = ("helm install wingman charts/wingman -n test \\\n  -f values.yaml\n"
            "Pod must start within the token's lifetime: never longer\n"
            f"  votersSecret: {PASSWORD}\n    and more text, indented\n"
            f"args: ['--db-password={PASSWORD[:9]}\n    {PASSWORD[9:]}']\n")
    once = redact(text)
    assert redact(once) == once
    assert once.startswith("helm install wingman charts/wingman -n test \\\n  -f values.yaml\n")
    assert "votersSecret: [REDACTED]\n" in once
    assert not leaks(once, PASSWORD[9:]) and PASSWORD not in once, once


# --------------------------------------------------------------------------- a third review
# Values a credential name is next to but not joined to by the rules before: words after the
# first, the line below the key, a column away, and a ConfigMap's values in every printing.

DESCRIBED_CONFIGMAP = textwrap.dedent(f"""\
    Name:         app
    Namespace:    default
    Labels:       <none>
    Annotations:  <none>

    Data
    ====
    DB_PASSWORD:
    ----
    {PASSWORD}
    log.level:
    ----
    info
    smtp.token:
    ----
    {SPACED}

    {PASSWORD}-2

    BinaryData
    ====

    Events:  <none>
    """)

BESIDE = {
    # a value with spaces, unquoted: every word of it, up to the next pair
    "properties-spaced": (f"spring.datasource.password = {SPACED}\n", [SPACED]),
    "env-lowercase-spaced": (f"db_password={SPACED}\nhome=/root\n", [SPACED]),
    "connection-string": (f'"Default": "Server=db;User Id=sa;Password={SPACED};Encrypt=true"',
                          [SPACED]),
    "docker-env-template": (f"[DB_PASSWORD={SPACED} HOME=/root]\n", [SPACED]),
    "go-struct": (f"config: &{{Host:db Password:{SPACED} User:app}}\n", [SPACED]),
    # a ConfigMap's credential keys (its other values stay): spaced, block scalar, below
    "configmap-spaced": (f"apiVersion: v1\ndata:\n  DB_PASSWORD: {SPACED}\n  level: info\n"
                         "kind: ConfigMap\n", [SPACED]),
    "configmap-block": (f"apiVersion: v1\ndata:\n  DB_PASSWORD: |\n    {PASSWORD}\n"
                        f"  api-token: >-\n    {SPACED}\nkind: ConfigMap\n", [PASSWORD, SPACED]),
    "configmap-described": (DESCRIBED_CONFIGMAP, [PASSWORD, SPACED, f"{PASSWORD}-2"]),
    # YAML: the value on the lines below its key, a plain scalar or a sequence's items
    "value-below-key": (f"auth:\n  password:\n    {PASSWORD}\n    {SPACED}\n  user: app\n",
                        [PASSWORD, SPACED]),
    "items-below-key": (f"tokens:\n- {PASSWORD}\n- '{SPACED}'\nname: x\n", [PASSWORD, SPACED]),
    # a name, then its value a column away (vault kv get, redis.conf, .netrc)
    "two-columns": (f"Key         Value\n---         -----\npassword    {PASSWORD}\n"
                    "username    admin\n", [PASSWORD]),
    "tab-separated": (f"api_token\t{PASSWORD}\n", [PASSWORD]),
    "redis-conf": (f"requirepass {PASSWORD}\nmasterauth {PASSWORD}-2\nAUTH {PASSWORD}-3\n",
                   [PASSWORD, f"{PASSWORD}-2", f"{PASSWORD}-3"]),
    "netrc-line": (f"machine github.com login bob password {PASSWORD}\n", [PASSWORD]),
    "netrc-lines": (f"machine api.heroku.com\n  login me@example.com\n  password {PASSWORD}\n",
                    [PASSWORD]),
}


@pytest.mark.parametrize("name", list(BESIDE))
def test_credentials_beside_their_names_are_redacted(name: str) -> None:
    text, secrets = BESIDE[name]
    out = redact(text)
    for secret in secrets:
        assert not leaks(out, secret) and not any(
            len(word) >= 5 and word in out for word in secret.split()), out


def test_the_rest_of_a_configmap_and_its_lines_stay_readable() -> None:
    out = redact(DESCRIBED_CONFIGMAP)
    for kept in ("Data\n====\nDB_PASSWORD:\n----\n[REDACTED]\nlog.level:\n----\ninfo\n",
                 "smtp.token:\n----\n[REDACTED]\n\n[REDACTED]\n\nBinaryData\n====\n",
                 "Events:  <none>\n"):
        assert kept in out, out
    out = redact(BESIDE["configmap-spaced"][0])
    assert "  level: info\n" in out and "  DB_PASSWORD: [REDACTED]\n" in out, out
    out = redact("level=warn msg=retry password=x user=bob attempt=3\nToken expired, retrying\n")
    assert out == "level=warn msg=retry password=[REDACTED] user=bob attempt=3\n" \
                  "Token expired, retrying\n", out


@pytest.mark.parametrize("argv", [
    "kubectl get pods -o jsonpath={.items[*].spec.containers[*].env[*].value}",
    "kubectl get configmap app -o jsonpath={.data.DB_PASSWORD}",
    "kubectl get deploy web -o go-template={{range|.spec.template.spec.containers}}"
    "{{range|.env}}{{.value}}{{end}}{{end}}",
    "kubectl get pods -o custom-columns=NAME:.metadata.name,V:.spec.containers[0].args",
    "kubectl config view --raw -o jsonpath={.users[0].user.token}",
    "kubectl get pods --template {{range|.items}}{{.metadata.annotations}}{{end}}",
    "kubectl get pods -o jsonpath-file=template.txt",
])
def test_templates_printing_values_of_any_resource_are_withheld_whole(argv: str) -> None:
    # a pod's environment or a ConfigMap's data printed bare is as bare as a Secret's
    command = [arg.replace("|", " ") for arg in argv.split(" ")]  # "|": a space in one arg
    assert redact(f"{PASSWORD} {SPACED}\n", command=command) == WITHHELD


@pytest.mark.parametrize("argv", [
    "kubectl get pods -o jsonpath={.items[*].spec.containers[*].image}",
    "kubectl get deploy web -o jsonpath={.status.readyReplicas}",
    "kubectl get pods -o custom-columns=NAME:.metadata.name,NODE:.spec.nodeName",
    "kubectl get pods -o go-template={{range|.items}}{{.status.phase}}{{end}}",
])
def test_templates_printing_no_values_are_kept(argv: str) -> None:
    command = [arg.replace("|", " ") for arg in argv.split(" ")]
    assert redact("web-1 nginx:1.27 3\n", command=command) == "web-1 nginx:1.27 3\n"


HIDDEN_BY_CHARACTERS = {
    # what a terminal shows as a space, and a carriage return it overwrites the line with
    "no-break-space": f"password:\u00a0{PASSWORD}\n",
    "no-break-space-env": f"- name: DB_PASSWORD\n  value:\u00a0{PASSWORD}\n",
    "line-separator": f"password=\u2028{PASSWORD}\n",
    "ideographic-space": f"token\u3000{PASSWORD}\n",
    "carriage-return": f"password: ********\r{PASSWORD}\n",
    # a name or separator in fullwidth forms or another script's colon reads as ASCII's
    "fullwidth-colon": f"password\uff1a{PASSWORD}\n",
    "fullwidth-colon-yaml": f"- name: DB_PASSWORD\n  value\uff1a {PASSWORD}\n",
    "fullwidth-name": f"\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44={PASSWORD}\n",
    "ratio-colon": f"DB_PASSWORD\u2236 {PASSWORD}\n",
    "small-equals": f"api_token\ufe66{PASSWORD}\n",
    "armenian-colon": f"password\u0589 {PASSWORD}\n",
    "modifier-equals": f"DB_PASSWORD\ua78a{PASSWORD}\n",
    "triangular-colon": f"password\u02d0{PASSWORD}\n",
    "mongolian-colon": f"password\u1804 {PASSWORD}\n",
    "ethiopic-preface-colon": f"api_token\u1366{PASSWORD}\n",
    "syriac-colon": f"password\u0705{PASSWORD}\n",
    "colon-equals": f"password\u2254{PASSWORD}\n",
    "heavy-equals": f"DB_PASSWORD\U0001f7f0{PASSWORD}\n",
    # a name spelt with other scripts' look-alike letters reads as the Latin name
    "cyrillic-a": f"p\u0430ssword: {PASSWORD}\n",
    "greek-omicron": f"passw\u03bfrd: {PASSWORD}\n",
    "cyrillic-only": f"\u0440\u0430\u0455\u0455 = {PASSWORD}\n",
    "armenian-o": f"t\u0585ken: {PASSWORD}\n",
    "cyrillic-camel": f"db\u0420\u0430ss: {PASSWORD}\n",
    "cyrillic-env": f"- name: DB_P\u0410SSWORD\n  value: {PASSWORD}\n",
    "math-bold": "\U0001d429\U0001d41a\U0001d42c\U0001d42c\U0001d430\U0001d428\U0001d42b"
                 f"\U0001d41d: {PASSWORD}\n",
    "circled": f"\u24e3\u24de\u24da\u24d4\u24dd={PASSWORD}\n",
    "small-capitals": f"\u1d1b\u1d0f\u1d0b\u1d07\u0274 {PASSWORD}\n",
    "accented": f"p\u00e1ssword: {PASSWORD}\n",
    "combining-accent": f"pa\u0301ssword: {PASSWORD}\n",
}


@pytest.mark.parametrize("name", list(HIDDEN_BY_CHARACTERS))
def test_credentials_behind_other_spaces_and_carriage_returns_are_redacted(name: str) -> None:
    out = redact(HIDDEN_BY_CHARACTERS[name])
    assert not leaks(out, PASSWORD) and REDACTED in out, out


@pytest.mark.parametrize(("text", "kept"), [
    # a name in look-alike letters is shown as the Latin name it reads as
    (f"p\u0430ssword: {PASSWORD}\n", "password: [REDACTED]\n"),
    # other words of other scripts are kept as they are, look-alike letters and all
    ("\u041f\u0430\u0440\u043e\u043b\u044c \u0438\u0437\u043c\u0435\u043d\u0451\u043d: "
     "\u0441\u043e\u0440\u0442 \u0440\u0430\u0441\n", None),
    ("\u03ba\u03c9\u03b4\u03b9\u03ba\u03cc\u03c2: \u03bf\u03ba\n", None),
    ("caf\u00e9 na\u00efve \U0001d41a\U0001d41b \u0561\u0575\u0578\n", None),
])
def test_only_names_in_look_alike_letters_are_read_as_latin(text: str, kept: str | None) -> None:
    assert redact(text) == (text if kept is None else kept)


def test_binary_output_is_redacted_and_the_text_around_it_kept() -> None:
    # `kubectl exec ... cat keystore.p12`: a binary key's bytes, some of them printable
    import random

    key = random.Random(7).randbytes(4096)
    text, _, _ = bound_output(b"before\n" + key + b"\nafter\n", limit=16384, truncated=False)
    assert text.startswith("before\n") and text.endswith("\nafter\n"), text
    printable = key.decode("latin-1")
    assert not any(printable[i:i + 4] in text for i in range(len(printable) - 3)
                   if printable[i:i + 4].isprintable() and printable[i:i + 4].strip()), text
    assert redact("caf\u00e9 na\u00efve \u6f22\u5b57\n") == "caf\u00e9 na\u00efve \u6f22\u5b57\n"


COMMAND_LINES = {
    # a password joined to its user or its flag, in a process list or a pod's command
    "curl-user": (f"curl -u admin:{PASSWORD} https://api.internal/v1", PASSWORD),
    "curl-user-long": (f'  args: ["--user=bob:{PASSWORD}", "https://x"]', PASSWORD),
    "mysql-joined": (f"root  42  mysql -h db -uroot -p{PASSWORD} app", PASSWORD),
    "mysqldump-items": (f'  command: ["mysqldump", "-uroot", "-p{PASSWORD}", "app"]', PASSWORD),
    # names of credentials the rules did not know
    "salt": (f"WORDPRESS_NONCE_SALT={PASSWORD}\nsigning.salt: {PASSWORD}", PASSWORD),
    "hmac": (f"HMAC={PASSWORD}", PASSWORD),
    "connstr": (f"CONN_STR={PASSWORD}\nlog connstr={PASSWORD}", PASSWORD),
    # hex of text, as base64 of text already is
    "hex-text": (f"blob {f'password={PASSWORD}'.encode().hex()}",
                 f"password={PASSWORD}".encode().hex()),
}


@pytest.mark.parametrize("name", list(COMMAND_LINES))
def test_joined_and_newly_named_credentials_are_redacted(name: str) -> None:
    text, secret = COMMAND_LINES[name]
    out = redact(text)
    assert not leaks(out, secret) and REDACTED in out, out


@pytest.mark.parametrize("text", [
    "docker run -u 1000:1000 web:1", "git log -p -u", "mysql -p -h db app",
    "sha256:4bd5e3c4f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5",
])
def test_user_ids_flags_without_values_and_digests_are_kept(text: str) -> None:
    assert redact(text) == text


def test_a_character_cut_by_the_output_bound_is_no_binary_data() -> None:
    raw = "deployment \u00e9t\u00e9 \u6f22\u5b57\n".encode()
    for cut in range(len(raw) - 4, len(raw)):
        text, truncated, _ = bound_output(raw[:cut], limit=16384, truncated=True)
        assert text.startswith("deployment \u00e9t\u00e9 ") and REDACTED not in text, text
        assert truncated


@pytest.mark.parametrize("text", [
    "    Environment:\n      DB_PASSWORD:  <set to the key 'password' in secret 'db'>  "
    "Optional: false\n      API_KEY:      <set to the key 'k' of config map 'app'>  "
    "Optional: false\n",
    "Mountable secrets:   <none>\nTokens:              <none>\nEvents:              <none>\n",
])
def test_what_kubectl_describe_prints_in_place_of_a_value_is_kept(text: str) -> None:
    assert redact(text) == text


QUOTING = {
    # a plain value holding a flow indicator, in block style: the indicator ends nothing
    "env-plain-brace": f"env:\n- name: DB_PASSWORD\n  value: ab}}{PASSWORD}\n",
    "env-plain-comma": f"env:\n- name: DB_PASSWORD\n  value: $.,{PASSWORD}\n",
    "env-value-first-brace": f"env:\n- value: <}}{PASSWORD}\n  name: API_TOKEN\n",
    # braces inside a quoted value of one-line JSON and flow style
    "env-compact-json-brace": json.dumps({"containers": [{"name": "c", "env": [
        {"name": "DB_PASSWORD", "value": "{" + PASSWORD}]}]}, separators=(",", ":")),
    "env-flow-quoted-brace": ("containers: [{env: [{name: LEVEL, value: a}, {name: DB_PASSWORD, "
                              f"value: 'e7}}&{PASSWORD}('}}], name: c}}]\n"),
    # YAML's escaped single quote ('')
    "env-single-quote-escape": f"- name: DB_PASSWORD\n  value: 'rP''{PASSWORD}'\n",
    "flow-single-quote-escape": f"{{data: {{db_password: ':T''{PASSWORD}'}}, kind: ConfigMap}}\n",
}


@pytest.mark.parametrize("name", list(QUOTING))
def test_values_holding_quotes_and_flow_indicators_are_redacted_whole(name: str) -> None:
    out = redact(QUOTING[name])
    assert not leaks(out, PASSWORD) and REDACTED in out, out


def test_values_in_flow_style_stay_cut_at_their_indicators() -> None:
    text = ("env: [{name: DB_PASSWORD, value: abc}, {name: LEVEL, value: debug}]\n"
            "env:\n- {name: API_TOKEN, value: xyz}\n- {name: MODE, value: fast}\n")
    assert redact(text) == (
        f"env: [{{name: DB_PASSWORD, value: {REDACTED}}}, {{name: LEVEL, value: debug}}]\n"
        f"env:\n- {{name: API_TOKEN, value: {REDACTED}}}\n- {{name: MODE, value: fast}}\n")


INSIDE_VALUES = {
    # docker inspect: a double-quoted assignment holding a single quote, and the reverse
    "docker-env-apostrophe": json.dumps({"Config": {"Env": [f"DB_PASSWORD=it's{PASSWORD}",
                                                            "PATH=/bin"]}}, indent=4),
    "single-quoted-assignment": f"['DB_PASSWORD=a\"{PASSWORD}', 'PATH=/bin']",
    # an unquoted value holding a quote
    "plain-value-quote": f"login failed password=ab\"{PASSWORD} user=bob",
    # a sequence item assigning a credential: all of the line, commas and brackets too
    "sequence-env": f"Env:\n- DB_PASSWORD=t0i,{PASSWORD}+@if[D\n- PATH=/bin\n",
    # a flag's value as the next item, quoted, starting with a flow indicator or an escape
    "flag-item-comma": f"args:\n- --client-secret\n- ',}}.1{PASSWORD}'\n",
    "flow-flag-escape": f"args: [--db-password, '''%{PASSWORD}', -v]\n",
}


@pytest.mark.parametrize("name", list(INSIDE_VALUES))
def test_values_holding_quotes_commas_and_escapes_are_redacted(name: str) -> None:
    out = redact(INSIDE_VALUES[name])
    assert not leaks(out, PASSWORD) and REDACTED in out, out
    assert "PATH=/bin" in out or "PATH" not in INSIDE_VALUES[name], out


@pytest.mark.parametrize("text", [
    f"DATABASE_URL=postgres://app:Ab/Cd+{PASSWORD}==@db:5432/app",
    f"url: redis://:p#ss?{PASSWORD}@cache:6379/0",
])
def test_a_url_password_holding_a_slash_or_a_hash_is_redacted(text: str) -> None:
    out = redact(text)
    assert not leaks(out, PASSWORD) and REDACTED in out, out


@pytest.mark.parametrize("text", [
    "https://example.com:443/users?mail=ops@example.com",
    "imageID: docker-pullable://registry.example.com:5000/web@sha256:0f04e4f646a3f14bf31d8bc8",
])
def test_a_port_and_a_path_with_an_at_sign_are_no_password(text: str) -> None:
    assert redact(text) == text


STATIC_KEY = bytes(range(0, 256, 8)).hex()  # 32 bytes of key, in hex
SOURCE_AND_SQL = {
    # what kubectl exec ... cat prints of an application's configuration
    "php-define": f"define( 'DB_PASSWORD', '{PASSWORD}' );",
    "ruby-env": f'ENV["API_TOKEN"] = "{PASSWORD}"',
    "python-environ": f'os.environ["API_TOKEN"] = "{PASSWORD}"',
    "php-array": f"'password' => '{PASSWORD}',",
    "perl-hash": f"password => {PASSWORD},",
    "csh-setenv": f"setenv DB_PASSWORD {PASSWORD}",
    "fish-set": f"set -x DB_PASSWORD {PASSWORD}",
    # SQL in a migration log or a psql history
    "sql-identified-by": f"CREATE USER app IDENTIFIED BY '{PASSWORD}';",
    "sql-with-password": f"ALTER ROLE app WITH LOGIN PASSWORD '{PASSWORD}';",
    "sql-password-function": f"SET PASSWORD FOR root = PASSWORD('{PASSWORD}');",
    # an armoured key that is no PEM private key
    "openvpn-static-key": "-----BEGIN OpenVPN Static key V1-----\n"
                          f"{STATIC_KEY}\n-----END OpenVPN Static key V1-----\n",
}


@pytest.mark.parametrize("name", list(SOURCE_AND_SQL))
def test_credentials_in_source_sql_and_key_files_are_redacted(name: str) -> None:
    out = redact(SOURCE_AND_SQL[name])
    assert not leaks(out, PASSWORD) and not leaks(out, STATIC_KEY), out
    assert REDACTED in out, out


@pytest.mark.parametrize("text", [
    '{"name": "web", "image": "nginx:1.27"}', "labels: {'app': 'web', 'tier': 'frontend'}",
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
])
def test_quoted_names_and_public_blocks_are_kept(text: str) -> None:
    assert redact(text) == text


def test_flags_of_the_command_kubectl_exec_runs_are_no_output_format() -> None:
    argv = ["kubectl", "exec", "web", "--", "ps", "-o", "pid,args"]
    assert redact("PID COMMAND\n1 nginx\n", command=argv) == "PID COMMAND\n1 nginx\n"


@pytest.mark.parametrize("text", [
    f'["--token", "{SPACED * 200}"]', f"args: [--token, '{SPACED * 200}']",
    f"define('DB_PASSWORD', '{SPACED * 200}');", f"IDENTIFIED BY '{SPACED * 200}'",
    f"define('DB_PASSWORD', '{SPACED}",
])
def test_a_value_longer_than_a_rule_reads_or_never_closed_is_redacted_whole(text: str) -> None:
    out = redact(text)
    assert "horse" not in out and REDACTED in out, out


def test_a_long_flag_value_joined_in_a_flow_item_is_redacted_whole() -> None:
    out = redact(f'["--token={SPACED * 200}", "-v"]')
    assert "horse" not in out and REDACTED in out, out


@pytest.mark.parametrize("text", ["Token expired\n", "Password changed\n", "Secret rotated\n"])
def test_a_two_word_sentence_starting_with_a_credential_word_is_kept(text: str) -> None:
    assert redact(text) == text


# --------------------------------------------------------------------------- a fourth review

POSITIONAL = {
    # TOML's (and Python's) multi-line strings: the value runs to its closing delimiter
    "toml-multiline-basic": f'[db]\npassword = """\n{SPACED}\n{PASSWORD}\n"""\nport = 5432\n',
    "toml-multiline-literal": f"api_token = '''{PASSWORD}'''\n",
    "toml-multiline-unclosed": f'secret = """{PASSWORD}\n',
    "python-multiline": f'DB_PASSWORD: str = """{PASSWORD}"""\n',
    "python-raw-multiline": f'DB_PASSWORD = r"""\n{SPACED}\n"""\n',
    "go-raw-string": f"const apiToken = `\n{SPACED}\n`\n",
    "go-short-declaration": f"secret := `{SPACED}\n{PASSWORD}`\n",
    # .pgpass: host:port:database:user:password
    "pgpass": f"db.example.com:5432:app:alice:{PASSWORD}\n",
    "pgpass-wildcards": f"*:*:*:postgres:{PASSWORD}\n",
    "pgpass-escaped-colon": f"10.0.0.5:5432:app:alice:pa\\:{PASSWORD}\n",
    # user:PASSWORD@host without a scheme: rsync, a git remote, a proxy setting
    "rsync": f"rsync -av alice:{PASSWORD}@backup.example.com::data /srv\n",
    "git-remote": f"origin\talice:{PASSWORD}@github.com:org/repo.git (fetch)\n",
    "proxy": f"HTTPS_PROXY is proxy:{PASSWORD}@proxy.internal:3128\n",
    "userinfo-with-at": f"git remote add origin alice:p@ss{PASSWORD}@git.example.com:r.git\n",
    "protocol-relative": f"fetching //alice:{PASSWORD}@mirror.example.com/pkg\n",
    # a table whose header names a credential column: CSV, TSV, psql, mysql, kubeadm, docker
    "csv": f"name,password,role\nbob,x,user\nalice,{PASSWORD},admin\n",
    "csv-quoted": f'"name","api_token"\n"alice","{PASSWORD}"\n',
    "csv-value-with-comma": f"user,password\nalice,a,{PASSWORD}\n",
    "tsv": f"user\tsecret\nalice\t{PASSWORD}\n",
    "psql": f" usename | passwd \n---------+--------\n alice   | {PASSWORD}\n(1 row)\n",
    "mysql": f"+-------+------------+\n| user  | password   |\n+-------+------------+\n"
             f"| alice | {PASSWORD} |\n+-------+------------+\n",
    "kubeadm-token-list": "TOKEN                     TTL   EXPIRES   USAGES\n"
                          f"{PASSWORD}   23h   <never>   signing\n",
    "table-middle": f"NAME   TOKEN   AGE\nci     {PASSWORD}   5d\n",
    "table-row-pushed-right": f"NAME   PASSWORD   AGE\nweb-frontend-canary {PASSWORD} 3d\n",
    "csv-digit-header": f"user,2fa_secret\nalice,{PASSWORD}\n",
    "psql-expanded": f"-[ RECORD 1 ]----\nusename | alice\npasswd  | {PASSWORD}\n",
    "markdown-pairs": f"| Setting | Value |\n|---|---|\n| api_token | {PASSWORD} |\n",
    "table-ruled": f"Name   Password            Enabled\n----   --------            -------\n"
                   f"alice  {PASSWORD}   True\n",
    # a whitespace table's header in any case, without a rule, above a row aligned with it
    "table-lowercase": f"name   secret_key   age\nweb    {PASSWORD}   3d\n",
    "table-lowercase-padded": f"name   secret_key          age\nweb    {PASSWORD}   3d\n",
    "table-title-case": f"Name   Password            Enabled\nalice  {PASSWORD}   True\n",
    # a row whose first cell ran long, its credential cell with spaces in it
    "table-cell-with-spaces-pushed":
        f"NAME   PASSWORD   AGE\nweb-frontend-canary-x   {PASSWORD} two   3d\n",
    "table-cells-uncountable": f"NAME   PASSWORD   AGE\nweb-canary-x   a  {PASSWORD} b   3d\n",
    # a neutral key under a credential one holds its value
    "yaml-value-under-password": f"db:\n  password:\n    value: {PASSWORD}\n  port: 5432\n",
    "yaml-key-under-credentials": f"credentials:\n  key: {PASSWORD}\n",
    "yaml-block-under-secret": f"secret:\n  note: rotated\n  data: |\n    {PASSWORD}\n",
    "yaml-value-below": f"api_token:\n  value:\n    {PASSWORD}\n",
    "json-value-under-secret": f'{{"secret": {{"value": "{PASSWORD}"}}}}\n',
    "ini-section": f"[credentials]\nkey = {PASSWORD}\n",
    "toml-section": f'[database.password]\nvalue = "{PASSWORD}"\n',
    "json-pretty-value-under-secret": f'{{\n  "secret": {{\n    "value": "{PASSWORD}"\n  }}\n}}\n',
    # what is nested deeper under a credential key, under any name, holds its value too
    "yaml-two-levels-down": f"db_password:\n  current:\n    value: {PASSWORD}\n",
    "yaml-three-levels-down": f"api_token:\n  v2:\n    primary:\n      data: {PASSWORD}\n",
    "yaml-named-child": f"db_password:\n  current: {PASSWORD}\n  previous: old\n",
    "yaml-nested-block": f"secret:\n  current:\n    pem: |\n      {PASSWORD}\n",
    "yaml-nested-list": f"tokens:\n  active:\n  - {PASSWORD}\n  - other\n",
    "yaml-nested-flow": f"password:\n  history: [{PASSWORD}, old]\n",
    "yaml-list-of-maps": f"credentials:\n- current: {PASSWORD}\n",
    "yaml-below-a-reference": f"password:\n  secretKeyRef:\n    name: db\n  current: {PASSWORD}\n",
    # below a key that names no value, or a reference, any child but a reference's own fields
    "yaml-under-value-from": f"password:\n  valueFrom:\n    x: {PASSWORD}\n",
    "yaml-under-value-from-deeper": f"token:\n  valueFrom:\n    x:\n      name: {PASSWORD}\n",
    "yaml-value-from-scalar": f"password:\n  valueFrom: {PASSWORD}\n",
    "yaml-value-from-items": f"password:\n  valueFrom:\n  - {PASSWORD}\n",
    "yaml-reference-other-field":
        f"password:\n  valueFrom:\n    secretKeyRef:\n      name: db\n      value: {PASSWORD}\n",
    "yaml-reference-as-scalar": f"password:\n  valueFrom:\n    secretKeyRef: {PASSWORD}\n",
    "yaml-items-list": f"password:\n  items:\n    - {PASSWORD}\n",
    "yaml-items-list-same-indent": f"api_token:\n  items:\n  - {PASSWORD}\n",
    "yaml-items-values": f"password:\n  items:\n    - value: {PASSWORD}\n",
    "yaml-under-user": f"password:\n  user:\n    current: {PASSWORD}\n",
    "yaml-under-selector": f"secret:\n  selector:\n    x: {PASSWORD}\n",
    "yaml-under-path-list": f"password:\n  path:\n  - {PASSWORD}\n",
    "yaml-user-flow": f"password:\n  user: {{name: bob, pw: {PASSWORD}}}\n",
    "json-two-levels-down": f'{{"db_password": {{"current": {{"value": "{PASSWORD}"}}}}}}\n',
    "json-pretty-two-levels-down":
        f'{{\n  "db_password": {{\n    "current": {{\n      "value": "{PASSWORD}"\n'
        '    }\n  }\n}\n',
}


@pytest.mark.parametrize("name", list(POSITIONAL))
def test_credentials_known_by_their_position_are_redacted(name: str) -> None:
    out = redact(POSITIONAL[name])
    assert not leaks(out, PASSWORD) and REDACTED in out, out


KEPT_AROUND = [
    # a quoted credential's name before `` : `` is an event's only after ``volume`` and before
    # the kubelet's sentences; a Go kind only for the kinds named like a credential; printf's
    # ``%s`` and ``--`` print nothing of their own before a continued line's prompt
    ('using "api_key" : sk live_abcdef1234567890\nset "password" : correct horse battery\n'
     'failed for volume "password" : red dragon\na:\n  set "password" : red dragon\n',
     'using "api_key" : [REDACTED]\nset "password" : [REDACTED]\n'
     'failed for volume "password" : [REDACTED]\na:\n  set "password" : [REDACTED]\n'),
    ("v1.Password = hunter2Xq\nmetav1.Password: hunter2Xq\nnodev1.Token: x1234567\n"
     "eventsv1.ApiKey: x1234567\n",
     "v1.Password = [REDACTED]\nmetav1.Password: [REDACTED]\nnodev1.Token: [REDACTED]\n"
     "eventsv1.ApiKey: [REDACTED]\n"),
    ("$ printf %s \\\n> Zq8vS3cr3tPw | docker login --password-stdin\n"
     "$ printf -- %s \\\n> Zq8vS3cr3tPw | docker login --password-stdin\n",
     "$ printf %s \\\n[REDACTED] | docker login --password-stdin\n"
     "$ printf -- %s \\\n[REDACTED] | docker login --password-stdin\n"),
    # a list of words that is ``net user NAME PASSWORD`` (a container's command as -o json
    # prints it); beside a directive, whatever follows is the value: a path, a flag, a source
    ("['net', 'user', 'bob', 'admin']\nargs: [net, user, alice, staff]\n",
     "['net', 'user', 'bob', '[REDACTED]']\nargs: [net, user, alice, [REDACTED]]\n"),
    ("requirepass /hunter2\npassword ./hunter2\nAUTH keyring\nmasterauth prompt\n"
     "requirepass --hunter\nrequirepass file\napi_key env\npassword ~/.config/app\n",
     "requirepass [REDACTED]\npassword [REDACTED]\nAUTH [REDACTED]\nmasterauth [REDACTED]\n"
     "requirepass [REDACTED]\nrequirepass [REDACTED]\napi_key [REDACTED]\npassword [REDACTED]\n"),
    ("name,password,role\nalice,s3cr3t,admin\n\nid,name\n1,bob\n",
     "name,password,role\nalice,[REDACTED],admin\n\nid,name\n1,bob\n"),
    ("NAME   TOKEN   AGE\nci     s3cr3t   5d\n", "NAME   TOKEN   AGE\nci     [REDACTED]   5d\n"),
    ("rsync alice:s3cr3t@host::data\n", "rsync alice:[REDACTED]@host::data\n"),
    ("rsync alice:s3@cr3t@host::data\n", "rsync alice:[REDACTED]@host::data\n"),
    # a row shorter than its header: the column's cell where it reaches
    ("NAME  TOKEN  AGE\nci    s3cr3t\n", "NAME  TOKEN  AGE\nci    [REDACTED]\n"),
    ("image: registry.local:5000/app:v1@sha256:0123\n", None),
    ("db:5432:app:alice:s3cr3t\n", "db:5432:app:alice:[REDACTED]\n"),
    # not positional credentials: a digest, scp, mail, counts, columns of no credential
    ("image: nginx:1.27@sha256:0123456789abcdef\n", None),
    ("scp backup.tar alice@host:/srv\n", None), ("mailto:ops@example.com\n", None),
    ("git@github.com:org/repo.git\n", None), ("https://host:8443/a@b\n", None),
    ("NAME      SECRETS   AGE\ndefault   0         5d\n", None),
    ("id,name,token_count\n1,alice,3\n", None),
    ("[credentials]\nkey = s3cr3t\nregion = eu\n[other]\nkey = k\n",
     "[credentials]\nkey = [REDACTED]\nregion = eu\n[other]\nkey = k\n"),
    ("credentials:\n  key: s3cr3t\n  user: bob\nother:\n  key: k\n",
     "credentials:\n  key: [REDACTED]\n  user: bob\nother:\n  key: k\n"),
    # a misaligned row: its cell by the count of cells, else from the column on (fail closed)
    ("NAME   PASSWORD   AGE\nweb-frontend-canary-x   two words   3d\n",
     "NAME   PASSWORD   AGE\nweb-frontend-canary-x   [REDACTED]   3d\n"),
    ("NAME   PASSWORD   AGE\nweb-frontend-canary-x   a  b c   3d\n",
     "NAME   PASSWORD   AGE\n[REDACTED]\n"),
    ("name   secret_key   age\nweb    s3cr3t   3d\n",
     "name   secret_key   age\nweb    [REDACTED]   3d\n"),
    # prose with wide spaces is no table: cells with spaces, rows not aligned with it
    ("the token  was refreshed\nand  then  it  expired\n", None),
    ("password  reset  requested\nfor  alice  today\n", None),
    # a reference to a Secret names where a credential is, not what it is
    ("valueFrom:\n  secretKeyRef:\n    name: db\n    key: password\n", None),
    # under a credential key: references, names and paths are kept, values at any depth not
    ("password:\n  valueFrom:\n    secretKeyRef:\n      name: db\n      key: password\n"
     "  current:\n    value: s3cr3t\n  path: /etc/pw\nport: 5432\n",
     "password:\n  valueFrom:\n    secretKeyRef:\n      name: db\n      key: password\n"
     "  current:\n    value: [REDACTED]\n  path: /etc/pw\nport: 5432\n"),
    ("auth:\n  enabled: true\n  username: app\n  rootPassword: s3cr3t\nimage: db:1\n",
     "auth:\n  enabled: true\n  username: app\n  rootPassword: [REDACTED]\nimage: db:1\n"),
    ("volumes:\n- name: v\n  secret:\n    items:\n    - key: password\n      path: pw\n", None),
    # Kubernetes' references under a credential key, every field of theirs kept
    ("password:\n  valueFrom:\n    configMapKeyRef:\n      name: db\n      key: pw\n"
     "      optional: true\n    fieldRef:\n      apiVersion: v1\n"
     "      fieldPath: metadata.name\n    resourceFieldRef:\n      containerName: app\n"
     "      resource: limits.cpu\n      divisor: 1m\n  user: bob\n  name: db\n", None),
    ("password:\n  secret:\n    items:\n    - key: password\n      path: pw\n      mode: 256\n",
     None),
    ("root:x:0:0:root:/root:/bin/bash\n", None),
    ("2026-12-03T10:00:00.123:INFO:started\n", None),
    # what is about a credential, not one: a duration, a public key
    ("    Type:                    Projected\n    TokenExpirationSeconds:  3607\n", None),
    ("token_timeout: 30\nsession_duration=3600\n", None),
    (f"-----BEGIN PUBLIC KEY-----\n{KEY_BODY}\n{KEY_BODY[::-1]}\n-----END PUBLIC KEY-----\n",
     None),
    ('doc = """\nAll about tokens.\n"""\n', 'doc = """\nAll about tokens.\n"""\n'),
    # XML: a value of no credential, with a ``<`` or empty, is kept; elements inside one are
    # read on their own
    ("<description>when a < b, <x></description>\n<password></password>\n", None),
    ("<config><password><s3cr3t</password><user>bob</user></config>\n",
     "<config><password>[REDACTED]</password><user>bob</user></config>\n"),
    ('[db]\npassword = """\nx y\n"""\nport = 5432\n',
     '[db]\npassword = """[REDACTED]"""\nport = 5432\n'),
    # a rule's value ends at a string's escaped line break: the next line is read as a line
    ('a: "Bearer abcdefghijklmnop\\nrequirepass X"\n',
     'a: "Bearer [REDACTED]\\nrequirepass [REDACTED]"\n'),
    ('{"a":"x\\r\\nrequirepass X\\r\\n"}\n', '{"a":"x\\r\\nrequirepass [REDACTED]\\r\\n"}\n'),
    # ... a lowercase one only; a token's length counted to its word's end
    ("using token Zq7Wv9Kx3LmPq8\\nretrying\n", "using token [REDACTED]\\nretrying\n"),
    ("using token Zq7W\\nretrying-later\n", "using token [REDACTED]\\nretrying-later\n"),
    ("using token SRdf6v\\NAvwt7{LQn99m now\n", "using token [REDACTED] now\n"),
    ("Bearer LXpmpn\\NVtjw5\n", "Bearer [REDACTED]\n"),
    ("Bearer Zq7\\TWv9Kx\n", "Bearer [REDACTED]\n"),
    ("a: 'x\\nrequirepass X'\n", "a: 'x\\nrequirepass [REDACTED]'\n"),
    ("export REDIS_ARGS=requirepass\\ X\n", "export REDIS_ARGS=requirepass\\ [REDACTED]\n"),
    # a value in quotes, or in a string a list holds, keeps the closing quote and brackets
    ("smbclient -U 'bob%X' //files\n", "smbclient -U 'bob%[REDACTED]' //files\n"),
    ('{"args":["redis-cli -a X"],"b":1}\n', '{"args":["redis-cli -a [REDACTED]"],"b":1}\n'),
    ("x: {a: 'requirepass X', b: 1}\n", "x: {a: 'requirepass [REDACTED]', b: 1}\n"),
    ('x: ["redis-cli -a X", "b"]\n', 'x: ["redis-cli -a [REDACTED]", "b"]\n'),
    # a JSON string alone on its line; a value past a [REDACTED] it starts with
    ('"x: {a: \\"requirepass X\\"}"\n', '"x: {a: \\"requirepass [REDACTED]\\"}"\n'),
    ('REDIS_CONF="[REDACTED]\\nrequirepass X"\n',
     'REDIS_CONF="[REDACTED]\\nrequirepass [REDACTED]"\n'),
    # a value's own quote and bracket at its end, when the quote before it on its line closes
    # a word (``"x"``) and opens no string the command line is written in
    ('echo "x" redis-cli -a Zq7"}\n', 'echo "x" redis-cli -a [REDACTED]\n'),
    ('x: "a" smbclient -U bob%Zq7"]\n', 'x: "a" smbclient -U bob%[REDACTED]\n'),
    ("say 'hi' redis-cli -a Zq7'}\n", "say 'hi' redis-cli -a [REDACTED]\n"),
    # each here-document of a command line, in order, its end markers kept
    ("cat <<A <<B | docker login --password-stdin\nx1\nA\nX2\nB\necho done\n",
     "cat <<A <<B | docker login --password-stdin\n[REDACTED]\nA\n[REDACTED]\nB\necho done\n"),
    # a name and one word that is no message's (``password hunter``); a file's text
    ('redis.conf: "password hunter"\n', 'redis.conf: "password [REDACTED]"\n'),
    ('x: "auth letmein"\n', 'x: "auth [REDACTED]"\n'),
    ('{"app.conf": "token refreshed"}\n', '{"app.conf": "token [REDACTED]"}\n'),
    ('data:\n  redis.conf: "password expired"\n', 'data:\n  redis.conf: "password [REDACTED]"\n'),
    # a token source's other fields are values
    ("serviceAccountToken: {path: token, value: s3cr3t}\n",
     "serviceAccountToken: {path: token, value: [REDACTED]}\n"),
    ("- serviceAccountToken:\n    path: token\n    value: s3cr3t\n",
     "- serviceAccountToken:\n    path: token\n    value: [REDACTED]\n"),
    # a command line in a flow sequence's string: its end before a plain item
    ("x: ['redis-cli -a X', b]\n", "x: ['redis-cli -a [REDACTED]', b]\n"),
    ("x: ['redis-cli -a X', b c, {d: e}]\n", "x: ['redis-cli -a [REDACTED]', b c, {d: e}]\n"),
    # where a password is read from is kept: stdin, a redirection's file, openssl's sources
    ("echo X9 | openssl enc -passin stdin -in f\n",
     "echo [REDACTED] | openssl enc -passin stdin -in f\n"),
    ("echo X9 > /tmp/p; cat /tmp/p | docker login --password-stdin\n",
     "echo [REDACTED] > /tmp/p; cat /tmp/p | docker login --password-stdin\n"),
    ("echo X9 2>/dev/null >/tmp/p; cat /tmp/p | docker login --password-stdin\n",
     "echo [REDACTED] 2>/dev/null >/tmp/p; cat /tmp/p | docker login --password-stdin\n"),
    ("openssl enc -pass pass:X9 -in f\n", "openssl enc -pass pass:[REDACTED] -in f\n"),
    ("openssl enc -passin 'pass:X9' -in f\n", "openssl enc -passin 'pass:[REDACTED]' -in f\n"),
    ("app -pass env:VAR -passout pass:X9\n", "app -pass env:VAR -passout pass:[REDACTED]\n"),
    # a JSON document in a YAML one in a JSON string: read where its escapes are decoded
    ('{"a": "x: {\\"token\\": {\\"a\\": {\\"b\\": \\"s3cr3t\\"}}}"}\n',
     '{"a": "x: {"token": [REDACTED] {"b": "[REDACTED]"}}}"}\n'),
    # a passphrase's words after a name a person types a value for are its value, whatever
    # words they are; after another credential's name, a message's only when each word is one
    ('level=info msg="temporary password: red dragon"\n',
     'level=info msg="temporary password: [REDACTED]"\n'),
    ('{"msg":"temporary password: purple king"}\n', '{"msg":"temporary password: [REDACTED]"}\n'),
    ("config: &{Host:db User:app Password:red dragon Port:5432}\n",
     "config: &{Host:db User:app Password:[REDACTED] Port:5432}\n"),
    ('msg="passphrase: not set"\nmsg="apikey: login ok"\nmsg="secret: the old one"\n',
     'msg="passphrase: [REDACTED]"\nmsg="apikey: [REDACTED]"\nmsg="secret: [REDACTED]"\n'),
    ('msg="token: purple failed"\nmsg="auth: foobared ok"\nmsg="token: to be or not"\n',
     'msg="token: [REDACTED]"\nmsg="auth: [REDACTED]"\nmsg="token: [REDACTED]"\n'),
    ('x: "password foobared"\ny: "token foobaring"\n',
     'x: "password [REDACTED]"\ny: "token [REDACTED]"\n'),
    # a quoted name after a word is an event's only as the kubelet writes one: a space before
    # its colon, a sentence after it, no credential's name before it
    ('INFO "api_key": 8f3a9c2e7b1d4f60\n', 'INFO "api_key": [REDACTED]\n'),
    ('password   "a": "Zq7xK2mP9w"\n', 'password   "[REDACTED]": "[REDACTED]"\n'),
    ("INFO 'token': 8f3a9c2e7b1d4f60\nfor volume \"db-creds\" : Zq7xK2mP9w\n",
     "INFO 'token': [REDACTED]\nfor volume \"db-creds\" : [REDACTED]\n"),
    ('password "db-creds" : secret x\n', 'password "[REDACTED]" : [REDACTED]\n'),
    # a word ending in ``v`` and digits is no API version: what follows its dot names a value
    ("env1.Password=Zq7xK2mP9w\n  kv1.Secret: Zq7xK2mP9w\n", "env1.Password=[REDACTED]\n"
     "  kv1.Secret: [REDACTED]\n"),
    ("dev1.Password=Zq7xK2mP9w\nsrv1.Token=Zq7xK2mP9w\n*env1.Password: Zq7xK2mP9w\n",
     "dev1.Password=[REDACTED]\nsrv1.Token=[REDACTED]\n*env1.Password: [REDACTED]\n"),
    ("app.v1.Password=Zq7xK2mP9w\nmy-v2.Token: Zq7xK2mP9w\n",
     "app.v1.Password=[REDACTED]\nmy-v2.Token: [REDACTED]\n"),
    # a continued line's prompt (``> ``, ``+ ``, ...) is no redirection: what echo prints
    ("$ echo \\\n> hunter22 | docker login -u bob --password-stdin\n",
     "$ echo \\\n[REDACTED] | docker login -u bob --password-stdin\n"),
    ("$ echo \\\n>hunter22 | docker login --password-stdin\n",
     "$ echo \\\n[REDACTED] | docker login --password-stdin\n"),
    ("$ echo -n \\\n  > hunter22 | docker login --password-stdin\n",
     "$ echo -n \\\n  [REDACTED] | docker login --password-stdin\n"),
    ("$ echo \\\n>> hunter22 | docker login --password-stdin\n",
     "$ echo \\\n[REDACTED] | docker login --password-stdin\n"),
    ("$ echo '' \\\n> hunter22 | docker login --password-stdin\n",
     "$ echo [REDACTED] | docker login --password-stdin\n"),
    ("$ echo \\\n+ hunter22 | docker login --password-stdin\n",
     "$ echo \\\n[REDACTED] | docker login --password-stdin\n"),
    ("$ echo \\\n- hunter22 | docker login --password-stdin\n",
     "$ echo \\\n[REDACTED] | docker login --password-stdin\n"),
    # an argument list one item to a line (a container's command as ``-o json`` prints it)
    (json.dumps({"command": ["redis-cli", "-a", "Zq7xK2mP9w", "ping"]}, indent=4),
     json.dumps({"command": ["redis-cli", "-a", "[REDACTED]", "ping"]}, indent=4)),
    (json.dumps({"command": ["net", "user", "svc", "Zq7xK2mP9w", "/add"]}, indent=2),
     json.dumps({"command": ["net", "user", "svc", "[REDACTED]", "/add"]}, indent=2)),
    ("args: [\r\n  redis-cli,\r\n  -a,\r\n  Zq7xK2mP9w\r\n]\n",
     "args: [\n  redis-cli,\n  -a,\n  [REDACTED]\n]\n"),
    # ``net use``'s password after the share, its device or not, before its options or after
    ("net use Z: \\\\srv\\share hunter22 /user:bob\n",
     "net use Z: \\\\srv\\share [REDACTED] /user:bob\n"),
    ("net use \\\\srv\\share /user:bob hunter22\nNET USE * \"\\\\srv\\s\" \"hunter 22\"\n",
     "net use \\\\srv\\share /user:bob [REDACTED]\nNET USE * \"\\\\srv\\s\" \"[REDACTED]\"\n"),
    ('["net", "use", "Z:", "\\\\\\\\srv\\\\share", "hunter22"]\n',
     '["net", "use", "Z:", "\\\\\\\\srv\\\\share", "[REDACTED]"]\n'),
    ("net use Z: \\\\srv\\share *\nnet use Z: /delete\nnet use \\\\srv\\share /user:bob\n", None),
]


@pytest.mark.parametrize(("text", "kept"), KEPT_AROUND)
def test_what_is_no_credential_or_around_one_is_kept(text: str, kept: str | None) -> None:
    assert redact(text) == (text if kept is None else kept)


# a megabyte of each new rule's worst case: linear time, a few seconds at most on a slow runner
MEGABYTE_LINES = {
    "multiline-unclosed": 'password = """' + "a" * 1_000_000,
    "multiline-openings": 'a = """' * 150_000,
    "multiline-mixed": "password = '''x" + '"""' * 300_000,
    "backquotes": "password = `" * 80_000,
    "sections": "[credentials]\nkey = a\n" * 45_000,
    "section-brackets": "[" * 1_000_000,
    "pgpass-escapes": "a:1:b:c:" + "\\:" * 500_000,
    "pgpass-fields": "a:1:" * 250_000,
    "userinfo-colons": "a:" * 500_000 + "@b",
    "userinfo-runs": "a:b@" * 250_000,
    "userinfo-ats": " a:" + "b@" * 500_000,
    "csv-rows": "name,password\n" + "a,b\n" * 250_000,
    "csv-headers": "name,password\n" * 70_000,
    "csv-quotes": "password,x\n" + '",' * 500_000,
    "table-row": "NAME  TOKEN\n" + "x" * 1_000_000,
    "table-rows": "NAME  TOKEN\n" + "ab    cd\n" * 110_000,
    "table-headers": "NAME  TOKEN\n" * 80_000,
    "table-ruled-headers": "Name  Token\n----  -----\n" * 40_000,
    "pipe-pairs": "password |" * 100_000,
    "pipe-names": "a" * 1_000_000 + " |",
    "neutral-children": "password:\n" + "  value: a\n" * 90_000,
    "neutral-parents": "password:\n  value:\n" * 55_000,
    "lowercase-headers": "name  token\n" * 80_000,
    "lowercase-rows": "name  token\n" + "ab    cd\n" * 110_000,
    "misaligned-rows": "NAME  TOKEN\n" + "abcdefgh  x y z\n" * 60_000,
    "misaligned-cells": "NAME  TOKEN\n" + "abcdefgh  x  y  z " * 50_000,
    "nested-values": "password:\n  a:\n" + "    b: c\n" * 100_000,
    "nested-references": "password:\n" + "  ref:\n  - a: b\n" * 60_000,
    "look-alike-word": "p\u0430ss" * 250_000,
    "look-alike-words": "\u0430 " * 500_000,
    "ascii-word-then-foreign": "a" * 1_000_000 + "\u0430",
    "xml-openings": "<a>" * 333_000,
    "xml-values-of-brackets": "<password><" * 100_000,
    "xml-brackets": "<password>" + "< " * 500_000,
    "xml-attributes": '<a b="c" ' * 110_000,
    "xml-escaped-openings": "&lt;a " * 170_000,
    "xml-escaped-values": "&lt;password&gt;" * 62_500,
    "xml-escaped-values-of-brackets": "&lt;password&gt;&lt;" * 50_000,
    "xml-cdata-openings": "<password><![CDATA[" * 52_000,
    "credential-flows-unclosed": '{"apiKeys":[' * 80_000,
    "cut-values": "password=a,b}" * 80_000,
    "cut-values-in-flows": "{password=a,b}" * 70_000,
    "credential-flows-of-lists": '{"password":[' + "[1]," * 250_000,
    "credential-flows-empty": '"token":[],' * 90_000,
    "credential-flows-nested": '{"password":{"a":' * 60_000,
    "credential-flows-closed": '{"token":["a","b"]},' * 50_000,
}


# (name, head, a unit repeated, how many times, tail): more of the same, kept apart
MEGABYTE_REPEATS = [
    ("flat-objects-braces-in-strings", "{", '"a{b" ', 166_000, ""),
    ("flat-objects-quote-runs", "", '{"', 500_000, ""),
    ("flat-objects-single-quotes", "", "{ 'a{' ", 140_000, ""),
    ("flat-objects-escapes", "", '{ "\\', 250_000, ""),
    ("userinfo-schemes", "", "://*a", 200_000, ""),
    ("userinfo-at-first", "@", "a://b:c", 140_000, ""),
    ("values-with-spaces", "", "  key: a b c d\n", 70_000, ""),
    ("values-as-items", "", "- a b\n", 160_000, ""),
    ("values-as-json-pairs", "", '"a": "b c", ', 80_000, ""),
    ("values-escaped", "", '"a": "{\\"b\\": \\"c d\\"}", ', 40_000, ""),
    ("values-escaped-unclosed", '"a": "', '{\\"b\\": \\"', 60_000, ""),
    ("values-as-env", "", "A=B C\n", 160_000, ""),
    ("tool-names", "", "zip ", 250_000, ""),
    ("tool-names-in-quotes", '"', 'zip "', 160_000, ""),
    ("tool-flags", "", "zip -P ", 140_000, ""),
    ("tool-positions", "", "htpasswd -b ", 80_000, ""),
    ("pipes", "", "echo a | ", 100_000, "x --password-stdin"),
    ("pipes-alone", "", "|", 1_000_000, ""),
    ("echo-spaces", "echo a", " ", 1_000_000, "b | docker login --password-stdin"),
    ("argument-lists", "", '["redis-cli", ', 80_000, ""),
    ("described-arguments", "    Command:\n", "      a\n", 125_000, ""),
    ("continued-lines", "", "redis-cli -a \\\n", 66_000, ""),
    ("here-documents", "", "x --password-stdin <<EOF\n", 41_000, ""),
    ("here-strings", "x --password-stdin ", "<<< a ", 166_000, ""),
    ("pipeline-parts", "echo a ", "| tee f ", 125_000, "| docker login --password-stdin"),
    # here-documents given to readers: their lines read once, not once a feed or a reader
    ("here-documents-fed", "", "cat <<E | ", 50_000,
     "docker login --password-stdin\n" + ("y" * 8_000 + "\n") * 62 + "E"),
    ("here-documents-read", "", "cat <<E | docker login --password-stdin | ", 12_000,
     "\n" + ("y" * 8_000 + "\n") * 62 + "E"),
    ("written-pipelines", "", "echo a > f; ", 85_000, "cat f | docker login --password-stdin"),
    ("tool-names-as-hosts", "redis-cli", " -h mysql", 110_000, ""),
    ("value-headers", "", "k: PASSWORD   NAME\n", 55_000, ""),
    ("value-headers-escaped", 'k: "', "a: PASSWORD   NAME\\n", 50_000, '"'),
    ("sequence-items", "", "- zip\n- -P\n", 100_000, ""),
    ("sequence-item-spaces", "- a", " ", 1_000_000, "b"),
    # values read as texts: behind tags, in flow collections, logfmt's, escaped, without a space
    ("values-behind-tags", "", "a@b: !!str &x c d\n", 55_000, ""),
    ("flow-items", "x: [", "'a b', ", 140_000, ""),
    ("flow-keys", "x: {", "a: b c, ", 120_000, ""),
    ("flow-openings", "x: ", "{a", 500_000, ""),
    ("logfmt-quotes", "", 'a="b c" ', 120_000, ""),
    ("cut-values-other-keys", "password=a", ",Bc:d", 200_000, ""),
    ("escaped-breaks", 'a: "', "b c\\n", 160_000, '"'),
    ("shell-escaped-spaces", "export A=", "b\\ ", 330_000, ""),
    ("values-without-space", "", "a:b c\n", 160_000, ""),
    # argument lists opened and never closed: each read from where it opens, not searched on
    ("argument-lists-unclosed", "", 'x: ["a, ', 125_000, ""),
    # YAML flow sequences read as argument lists; a string's end in a value, a redacted start;
    # quotes and line breaks escaped in a value read as a text
    ("flow-argument-lists", "", "[redis-cli, -a, ", 62_000, ""),
    ("string-ends", "", "redis-cli -a x'\"]' ", 55_000, ""),
    ("redacted-starts", "redis-cli -a ", "[REDACTED]", 100_000, "x"),
    ("escaped-quotes", 'a: "', 'x: \\"b c\\" ', 80_000, '"'),
    ("escaped-breaks-only", 'x: "requirepass a', "\\n", 500_000, '"'),
    # here-documents one after another, echo's redirections, a string's end before a plain
    # item, keys of a sentence's words, values past a redaction, files' texts, token sources
    ("here-document-markers", "cat ", "<<A ", 100_000, "| docker login --password-stdin\nx\nA"),
    ("echo-redirections", "echo ", "a 2>", 200_000, " | docker login --password-stdin"),
    ("string-ends-plain", "x: ['redis-cli -a ", "x', b", 150_000, "]"),
    ("sentence-keys", "", 'a "b" ', 150_000, "password: x"),
    ("redacted-lines", "", 'a: "[REDACTED]\\n"\n', 60_000, ""),
    ("prose-file-keys", "", "a.conf: password expired\n", 40_000, ""),
    ("api-kind-letters", "", "v", 1_000_000, ".Secret: x"),
    ("pass-sources", "openssl ", "-passin env:A ", 70_000, ""),
    ("token-sources", "x: ", "{serviceAccountToken: {path: a, ", 30_000, ""),
    # events' quoted names on one line, echo's continued lines' prompts, argument lists one
    # item to a line or opened on lines of their own, net use's shares, API groups' aliases
    ("event-names", "", 'a "password" : secret x; ', 40_000, ""),
    ("event-name-words", "x ", "a", 1_000_000, ' "password" : b c'),
    ("echo-prompts", "", "echo \\\n> ", 100_000, "a | docker login --password-stdin"),
    ("argument-lists-one-to-a-line", "", '["redis-cli",\n', 80_000, ""),
    ("argument-list-breaks", "[", "\n", 1_000_000, "redis-cli"),
    ("argument-list-openings", "", "[\n ", 300_000, "redis-cli"),
    ("net-use-shares", "", "net use \\\\s ", 80_000, ""),
    ("api-kind-aliases", "", "*corev", 160_000, "1.Secret: x"),
]
MEGABYTE_LINES.update({name: head + unit * count + tail
                       for name, head, unit, count, tail in MEGABYTE_REPEATS})


@pytest.mark.parametrize("name", list(MEGABYTE_LINES))
def test_a_megabyte_of_hostile_output_is_redacted_in_linear_time(name: str) -> None:
    started = time.process_time()
    out = redact(MEGABYTE_LINES[name] + "\npassword=hunter2\n")
    assert time.process_time() - started < 20
    assert "hunter2" not in out


def test_nothing_read_as_a_name_is_kept_past_the_text_it_came_from() -> None:
    # the readings of short names are remembered while one text is redacted (its keys repeat
    # on thousands of lines); a table's cells are read as names too, and may be values
    from wingman.gateway import redaction

    assert redact("NAME       PASSWORD\nweb        hunter2-cell\n" * 3) == \
        "NAME       PASSWORD\nweb        [REDACTED]\n" * 3
    assert redaction._credential_name.cache_info().currsize == 0
    redaction.redact_head("password: hunter2\n" * 50, 100)
    assert redaction._credential_name.cache_info().currsize == 0
