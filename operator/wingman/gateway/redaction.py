"""Redaction of command output: what the gateway keeps of what a command printed.

Output is the target's, so hostile: every step runs in linear time (no regular expression can
backtrack) and the input is at most the gateway's output bound. Pure: the standard library and
``wingman.logs`` (its base64 readings).

The steps, in order (``redact``):

0. **Command.** Output of a kubectl command that names Secrets in a format other than yaml,
   json, name or wide (``-o jsonpath``, ``go-template``, ``custom-columns``, ``--template``)
   is withheld whole (``withholds``): bare values, nothing around them to go by; so is, on any
   resource, a template read from a file, one this module cannot read, or one printing any
   field that is not a known harmless scalar (``_LEAVES``: names, counts, phases, images,
   ...): a parent field (``.spec``, ``{@}``, ``{{.}}``) prints every value below it.
1. **Clean.** A line of binary data (bytes that are no UTF-8, control characters no text has)
   is redacted whole. Terminal escape sequences (ANSI CSI/OSC and the rest), other control
   characters except newline and tab, and invisible format characters (zero-width,
   bidirectional) are removed; a carriage return alone and other spaces (no-break, ...)
   become a space, fullwidth forms and other colons and equals signs their ASCII characters,
   and a word whose letters read as a credential name (``password`` with a Cyrillic a) that
   name: they can hide a credential from the rules below, and from a person reading it.
2. **Known secrets** (the caller's: the capability token, the ServiceAccount token): every
   occurrence, also split across lines or spaces (read before step 1 too when the output has
   binary data or escape sequences, so that a line of it redacted whole leaves no part of one
   on the others, and an escape sequence removed takes no character of one away), without
   invisible characters and combining marks, and with letters that read as ASCII ones
   (look-alikes, fullwidth, mathematical, accented) read as them, and also in any case and with
   anything but letters and digits between its own (16 of them or more), reversed or ROT13'd;
   base64- (any alignment, either alphabet) or base32-encoded; in hex of either case with
   anything but hex digits between them (``63:61``, ``\\x63\\X61``, ``0x63, 0X61``,
   ``&#x63;``), also in hex dumps (``xxd``, ``hexdump -C``, ``od``: offsets and the characters'
   column left out, ``od -b``'s octal and ``od -c``'s characters too); with any of its
   characters escaped (octal ``\\143``, ``\\x63``, ``\\u0063``, ``\\u{63}``, ``%63``,
   ``%u0063``, ``&#x63;``, ``&#99;``, ``&amp;``) or JSON-escaped; base64 of it or of its
   base64, base32 or hex (so base64 twice, either one wrapped); at the end of the gateway's
   output (cut at its bound or its deadline), a start of one (but base64 twice) of 8
   characters or more.
3. **Structure.** Output of ``kubectl -o yaml|json`` (and kubeconfigs) is read line by line
   as YAML or JSON: every value in a Secret's ``data``/``stringData`` (and any base64 value in a
   ``data``/``binaryData`` block) whatever its key, in block or flow style, behind anchors and
   tags; the ``value`` of an environment entry whose ``name`` names a credential, in either
   order; a credential flag's value given as the next sequence item; a block scalar, flow
   collection or continued scalar under a credential key, or a plain scalar or sequence items
   on the lines below one without a value (also in a ConfigMap's ``data``), every value
   nested under one at any depth (``password:`` / ``  current:`` / ``    value: VALUE``) but
   the scalars of keys naming no value (``user``, ``path``) and a Kubernetes reference's
   fields (``valueFrom:`` / ``  secretKeyRef:`` / ``    name: db``), the value
   ``kubectl describe configmap`` prints below a credential key and ``----``; and the
   ``data``/``stringData`` of a Secret inside a one-line JSON (such as the
   ``last-applied-configuration`` annotation).
4. **Private keys**: PEM ``PRIVATE KEY`` blocks, up to their end (or the end of the output);
   other armoured key blocks but public ones (OpenVPN's static key) among the text rules.
5. **Encoded tokens**: base64 or hex runs and percent-encoded words that decode to a JWT or a
   private key; hex runs that decode to text.
6. **Text rules**: JWT-shaped strings (also a JWT cut short, and its continuation lines when
   wrapped); ``Authorization:`` header values (Bearer, Basic, any scheme) and ``Bearer``/
   ``Basic`` credentials; the password in a URL (``scheme://user:PASSWORD@host``) and a token
   as its user; ``env`` lines, quoted assignments and XML naming a credential (a value may
   start with ``<``: ``<password><secret</password>``; a start tag may hold attributes, and
   its ``key`` or ``name`` may name it: ``<entry key="password">``; also escaped,
   ``&lt;password&gt;``); password hashes;
   the value of a key that names a credential (``password``, ``pwd``, ``passphrase``,
   ``secret``, ``token``, ``api_key``, ``client-key-data``, ``private_key``, ``credentials``,
   ``cookie``, ``salt``, ...), quoted values whole, unquoted ones up to the next pair; a name
   and its value a column apart on a line of their own (one space apart only when the name is
   in one case or set: ``requirepass VALUE``, ``setenv NAME VALUE``; not ``Token expired``,
   nor a state, count, age, address, time or placeholder beside a resource's name in two
   custom columns, ``auth-service   Running``: ``_no_secret``; nor, beside ``pass`` or
   ``pwd``, a flag, a path or where a value is read from: ``pass --namespace``, ``pwd /root``;
   a directive's value is the credential whatever it is: ``requirepass /x``, ``AUTH env``),
   ``.netrc`` entries, a quoted name and
   its quoted value (``define('DB_PASSWORD', '...')``), SQL's ``IDENTIFIED BY '...'``, a
   multi-line string under a credential name (TOML's ``password = '''...'''``, Go's
   backquoted one); the
   value of a command-line flag that names one (``-p VALUE``, ``--password=VALUE``,
   ``--token VALUE``; openssl's ``-passin pass:VALUE``, not its ``env:``, ``file:``, ``fd:`` or
   ``stdin``), and a password joined to a user (``curl -u user:PASSWORD``) or to
   MySQL's ``-pPASSWORD``; a tool's own password flag or position after its name
   (``redis-cli -a VALUE``, ``[redis-cli, -a, VALUE]``, one item to a line or not, past another
   tool's name as a host's: ``-h mysql``; ``net use Z: \\\\srv\\share VALUE``), also one
   argument a line as ``kubectl describe`` prints a container's command and on lines continued
   by a backslash, and what a command reading a secret on its input is given (``echo VALUE |
   tee f | docker login --password-stdin``, ``echo VALUE > f; cat f |``, all of echo's words
   when none is printed before a ``>``, a continued line's prompt: ``<<< VALUE``, each
   here-document's lines, ``cat <<A <<B``); by position, a ``.pgpass`` line's last field,
   ``user:PASSWORD@host`` without a scheme, the cells of a table's column (CSV, TSV, psql,
   kubectl, PowerShell, a
   header of single words in any case above an aligned row) whose header names a credential,
   a name and its value a ``|`` apart (psql's ``\\x``), and a neutral key's value in
   an INI or TOML section named like a credential.
   Then each value that is a text of its own (a config file in a ConfigMap's YAML or JSON,
   also behind a tag or an anchor or in a flow collection, or a YAML one in a JSON string,
   its quotes escaped, a command line in an annotation,
   ``REDIS_CONF=requirepass X``, ``export NAME="..."``, logfmt's ``msg="..."``, a JSON string
   alone on its line; past a ``[REDACTED]`` it starts with) is read by these rules again as
   if it stood alone (:func:`_values_as_text`), but prose (``reason: password expired``, a
   participle known, not any word ending in ``-ed``; not under a key naming a file,
   ``redis.conf``). A message's words are no pair: ``msg="auth: login ok"`` (each word a
   message's, never after a name a person types a value for: ``password: red dragon`` is one),
   a built-in kind's Go type ``*v1.Secret:``, ``corev1.Secret`` (not ``env1.Password``), an
   event's ``for volume "db-creds" : secret ...`` (a space before its colon, a sentence after).
7. **Encoded values**: base64 runs that decode to text or a key, or look like random bytes
   (not in a certificate, not a public SSH key, not an identifier: a run of hex digits, or of
   lowercase letters and digits joined by a hyphen to more of a name, ``web-ej3fmmdd``);
   base64 of 4 or 5 bytes of printable ASCII standing alone, padded as an encoder pads
   (``cGFzcw==``, ``YWRtaW4=``; not ``SERVICE=``, the last line of wrapped base64, a
   certificate's, or a checksum named on its line);
   tokens known by their shape (GitHub, Slack, AWS key ids, ...).

Text with string escapes (a JSON document inside a JSON string) is read again with them
decoded; when that finds more, the decoded, redacted text is what is kept.

What redaction cannot promise is documented in docs/architecture.md ("Command output:
redaction and its limits"): it recognises credentials by shape and by name, so a secret with
neither (a bare word in a free-form log line, or one encoded in a way not listed here) is kept.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import functools
import hashlib
import itertools
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence

from wingman.logs import base64_readings
from wingman.scope import SWITCH_FLAGS

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
# A line of binary data: a byte that is no UTF-8 (decoded as U+FFFD) or a control character no
# text has (escape, bell, backspace and the whitespace ones aside: terminals use those).
_BINARY_LINE = re.compile(r"(?m)^[^\n]*?[\ufffd\x00-\x06\x0e-\x1a\x7f-\x9f][^\n]*+")
# What no one reads as text (control characters, an escape sequence's ESC, U+FFFD): output
# holding any is read for known secrets before it is cleaned too (:func:`_raw_views`)
_UNSHOWN_CHAR = re.compile(r"[\ufffd\x00-\x08\x0e-\x1f\x7f-\x9f]")
_UNSHOWN = frozenset("\ufffd" + "".join(map(chr, [*range(0x00, 0x20), *range(0x7f, 0xa0)])))


# Characters that read as ASCII punctuation or letters (fullwidth forms, U+FF01 to U+FF5E,
# other colons and equals signs) become it: a name and its separator are then the rules'.
_LOOKALIKES = {0xFF01 + i: 0x21 + i for i in range(94)} | {
    ord(c): ":" for c in "\ufe55\ufe13\ufe30\u2236\ua789\u02f8\u205a\u1361\u0589\u05c3"
                         "\u2982\u0703\u0704\u02d0\u02d1\u0705\u0706\u0707\u0708\u0709"
                         "\u1365\u1366\u1804\u2254\ua6f4\U00010781\U00010782\U0001da8a"} | {
    ord(c): "=" for c in "\ufe66\u207c\u208c\u2e40\u30a0\ua78a\u1400\U0001f7f0"}


# Letters of other scripts (and Latin's own variants) that read as a Latin letter: the Latin
# targets of Unicode's confusables for Cyrillic, Greek, Armenian, small capitals and the
# like. Mathematical, circled, superscript and fullwidth letters are NFKC's.
_LATIN_LOOKALIKES = {
    # Cyrillic (and Latin's script g)
    0x0430: "a", 0x0435: "e", 0x043E: "o", 0x0440: "p", 0x0441: "c", 0x0443: "y", 0x0445: "x",
    0x0455: "s", 0x0456: "i", 0x0458: "j", 0x0501: "d", 0x051B: "q", 0x051D: "w", 0x04BB: "h",
    0x04CF: "l", 0x043A: "k", 0x043C: "m", 0x0442: "t", 0x043F: "n", 0x044C: "b", 0x04AF: "y",
    0x0432: "b", 0x0433: "r", 0x050D: "g", 0x0261: "g", 0x0410: "A", 0x0412: "B", 0x0415: "E",
    0x041A: "K", 0x041C: "M", 0x041D: "H", 0x041E: "O", 0x0420: "P", 0x0421: "C", 0x0422: "T",
    0x0425: "X", 0x0423: "Y", 0x0405: "S", 0x0406: "I", 0x0408: "J", 0x051A: "Q", 0x051C: "W",
    0x04BA: "h", 0x04C0: "I", 0x04AE: "Y", 0x042C: "b", 0x050C: "G",
    # Greek
    0x03B1: "a", 0x03BF: "o", 0x03C1: "p", 0x03BD: "v", 0x03B9: "i", 0x03BA: "k", 0x03C4: "t",
    0x03C5: "u", 0x03C7: "x", 0x03B5: "e", 0x03B3: "y", 0x03C9: "w", 0x03B7: "n", 0x03F2: "c",
    0x03F3: "j", 0x03BC: "u", 0x03B2: "b", 0x0391: "A", 0x0392: "B", 0x0395: "E", 0x0396: "Z",
    0x0397: "H", 0x0399: "I", 0x039A: "K", 0x039C: "M", 0x039D: "N", 0x039F: "O", 0x03A1: "P",
    0x03A4: "T", 0x03A5: "Y", 0x03A7: "X", 0x03F9: "C", 0x037F: "J",
    # Armenian
    0x0585: "o", 0x057D: "u", 0x0581: "g", 0x0570: "h", 0x0578: "n", 0x057C: "n", 0x0561: "w",
    0x0566: "q", 0x0584: "p", 0x054F: "S", 0x0555: "O", 0x054D: "U", 0x053C: "L", 0x0548: "n",
    # Latin's dotless, script and small capital letters
    0x0131: "i", 0x0237: "j", 0x0251: "a", 0x0269: "i", 0x026A: "i", 0x028F: "y", 0x1D00: "a",
    0x0299: "b", 0x1D04: "c", 0x1D05: "d", 0x1D07: "e", 0x0262: "g", 0x029C: "h", 0x1D0A: "j",
    0x1D0B: "k", 0x029F: "l", 0x1D0D: "m", 0x0274: "n", 0x1D0F: "o", 0x1D18: "p", 0x0280: "r",
    0xA731: "s", 0x1D1B: "t", 0x1D1C: "u", 0x1D20: "v", 0x1D21: "w", 0x1D22: "z",
}
# a word holding a character that is no ASCII (its letters are read as Latin ones)
_FOREIGN_WORD = re.compile(r"(?<![\w.\-]|[^\x00-\x7f\s])[A-Za-z0-9_.\-]*+[^\x00-\x7f\s]"
                           r"(?:[\w.\-]|[^\x00-\x7f\s])*+")


def _latin_reading(word: str) -> str:
    """How ``word`` reads in Latin letters: compatibility forms composed (NFKC), accents
    dropped, other scripts' look-alikes (a Cyrillic a, a Greek omicron) as their Latin letter."""
    decomposed = unicodedata.normalize("NFKD", word)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", bare).translate(_LATIN_LOOKALIKES)


def _read_as_latin(match: re.Match[str]) -> str:
    """A word written in look-alike letters (``password`` with a Cyrillic a, in mathematical
    bold) as the credential name it reads as; any other word as it is."""
    word = match.group()
    reading = word.translate(_LATIN_LOOKALIKES)
    if not reading.isascii():
        reading = _latin_reading(word)
    if _CREDENTIAL_HINT.search(reading) is None:  # (a cheap test first)
        return word
    return reading if credential_name(reading) else word


def _clean_char(char: str) -> str:
    category = unicodedata.category(char)
    if category in ("Cf", "Co"):  # invisible: zero-width, bidirectional; private use
        return ""
    # a space that is not ASCII (no-break, em, ideographic; a line or paragraph separator)
    return " " if category in ("Zs", "Zl", "Zp") else char


def clean(text: str) -> str:
    """``text`` without escape sequences, control characters (but newline and tab),
    invisible format characters (zero-width, bidirectional: Unicode category Cf) and private
    use ones (Co: no text means anything by them); a line break
    (``\\r\\n``) becomes a newline; a carriage return alone (what a terminal overwrites the
    line with follows it) and other spaces (no-break, em, Unicode's line separator) become a
    space; fullwidth forms (U+FF01 to U+FF5E) and other colons and equals signs become
    their ASCII characters, and a word whose letters read as a credential name (other
    scripts' look-alikes, mathematical or accented letters) that name."""
    text = _ESCAPES.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", " ")
    text = _CONTROLS.sub("", text)
    if not text.isascii():
        text = text.translate(_LOOKALIKES)
        text = "".join(c if c.isascii() else _clean_char(c) for c in text)
        text = _FOREIGN_WORD.sub(_read_as_latin, text)
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


def _base32_forms(data: bytes) -> set[str]:
    """How ``data`` appears inside any base32 stream (each of the five alignments), in
    capitals as RFC 4648 writes it and in lowercase."""
    forms: set[str] = set()
    for k in range(5):
        encoded = base64.b32encode(b"\0" * k + data + b"\0" * 4).decode("ascii")
        first = -(-8 * k // 5)  # the first character made of the data's bits only
        last = (8 * (k + len(data))) // 5
        core = encoded[first:last]
        if len(core) >= 12:
            forms |= {core, core.lower()}
    return forms


def _forms(secret: str) -> set[str]:
    """The literal forms of a known secret looked for in a view of the output: itself,
    reversed and ROT13'd, its base64 (any alignment, either alphabet) and base32, its hex as
    a run (either case), ``\\x65`` and ``%65`` byte by byte and a C array's ``0x65,0x79``,
    percent- and JSON-escaped. What else is read (hex in any case or separators, other
    escapes, base64 of a form, hex dumps) is :func:`_found`'s."""
    data = secret.encode("utf-8")
    escaped = "".join(f"\\x{byte:02x}" for byte in data)  # \x65\x79: C, Python, printf
    percent = "".join(f"%{byte:02x}" for byte in data)  # every byte percent-escaped
    listed = ",".join(f"0x{byte:02x}" for byte in data)  # a C array's bytes (xxd -i)
    octal = "".join(f"{byte:03o}" for byte in data) if len(data) >= 4 else ""  # od -b's
    forms = {secret, secret[::-1], codecs.encode(secret, "rot13"), data.hex(), octal,
             data.hex().upper(), escaped, escaped.upper().replace("\\X", "\\x"),
             urllib.parse.quote(secret, safe=""), percent, percent.upper(), listed,
             listed.upper().replace("0X", "0x"), json.dumps(secret)[1:-1]}
    forms |= _base64_forms(data) | _base32_forms(data)
    return {f for f in forms if len(f) >= 8 or f == secret}


# The least of a known secret's start (or of one of its forms) that, ending a cut output, is
# redacted: as short as the forms found whole (:func:`_forms`), so that a cut shows at most 7
# characters of a secret's start (a JWT's header, which is no secret: its signature is), and
# long enough that an output ending by chance in the start of one is rare.
_CUT_LEAST = 8


def _cut_start(compact: str, form: str) -> int | None:
    """Where the longest start of ``form`` (``_CUT_LEAST`` characters or more, not all of it)
    that ends ``compact`` begins; None when none does. Knuth-Morris-Pratt over the last
    characters only: linear in the form's length, whatever the text."""
    if len(form) <= _CUT_LEAST:
        return None
    fallback, k = [0] * len(form), 0  # the longest start of form ending each of its starts
    for i in range(1, len(form)):
        while k and form[i] != form[k]:
            k = fallback[k - 1]
        k += form[i] == form[k]
        fallback[i] = k
    k = 0
    for char in compact[-(len(form) - 1):]:
        while k and char != form[k]:
            k = fallback[k - 1]
        k += char == form[k]
    return len(compact) - k if k >= _CUT_LEAST else None


# What a known secret is looked for without (beside whitespace): invisible format characters
# (zero-width, bidirectional: cleaning removes them) and combining marks (an accent added)
_UNSEEN = frozenset({"Cf", "Mn", "Me"})


def _unseen(char: str) -> bool:
    """Whether a known secret is looked for without ``char`` (:data:`_UNSEEN`)."""
    return not char.isascii() and unicodedata.category(char) in _UNSEEN


def _as_ascii(compact: str) -> str:
    """``compact`` with each character that reads as an ASCII one as that one (fullwidth
    forms, other colons and equals signs, other scripts' look-alike letters, mathematical,
    circled and accented letters: :func:`_latin_reading`), one character for one."""
    if compact.isascii():
        return compact
    table: dict[int, str] = {}
    for char in set(compact):
        if char.isascii():
            continue
        read = _LOOKALIKES.get(ord(char))
        reading = chr(read) if isinstance(read, int) else read or _latin_reading(char)
        if len(reading) == 1 and reading.isascii():
            table[ord(char)] = reading
    return compact.translate(table)


def _raw_views(text: str) -> list[list[int]]:
    """The characters of output not yet cleaned (:func:`clean`) a known secret is looked for
    in, by index: all but whitespace, control characters (a binary line's, an escape
    sequence's ESC), invisible format characters (zero-width, bidirectional: what cleaning
    removes too) and combining marks; and when there is an ESC (or an 8-bit CSI), also without the
    character after each ESC, and without each escape sequence but its last character.
    Cleaning removes an escape
    sequence whole, with what its ESC starts (``ESC X`` starts a string that runs to the
    next ESC) or what ends it (the ``m`` of ``ESC[31m``, a letter after a lone ``ESC``),
    which may be a secret's: found only after cleaning, the rest of the secret would be
    left. (Each view is read with look-alikes as cleaning reads them: :func:`_redact_known`.)"""
    plain = text.isascii()
    first = [i for i, char in enumerate(text) if not (char.isspace() or char in _UNSHOWN or
                                                      (not plain and _unseen(char)))]
    if "\x1b" not in text and "\x9b" not in text:
        return [first]
    started = bytearray(len(text) + 1)
    hidden = bytearray(len(text))
    for i, char in enumerate(text):
        if char == "\x1b":
            started[i + 1] = 1
    for match in _ESCAPES.finditer(text):
        hidden[match.start() : match.end() - 1] = b"\x01" * (match.end() - 1 - match.start())
    return [first, [i for i in first if not started[i]], [i for i in first if not hidden[i]]]


# What else a known secret is looked for as, each in a view derived from the compact output
# (:func:`_found`), every one built in one pass:
# - its hex in any case, between any separators (``63:61``, ``63 61``, ``6A-6b``, ``&#x63;``,
#   ``0x6A, 0x6b``, a hex dump's): the output's hex digits only, but a ``0x`` before one
_HEX_NOISE = re.compile(r"0x(?=[0-9a-f])|[^0-9a-f]++")  # (read in lowercase)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# ... and the letters a case-insensitive pattern reads as ASCII ones (the dotted and dotless
# i, the Kelvin sign, the long s: no other): a word a ``(?i)`` pattern finds in a text is
# where a pattern of its lowercase letters finds it in the text so folded (the same length).
# Such a pattern is looked for a hundred times faster: its first letters are skipped to.
_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ\u0130\u0131\u212a\u017f",
                      "abcdefghijklmnopqrstuvwxyziiks")
# - its letters and digits with anything else between them (``c,a,p``, ``c-a-p``, ``'c' 'a'``),
#   in any case: the output's letters and digits only
_NOT_ALNUM = re.compile(r"[^0-9a-z]++")  # (read in lowercase)
# - its characters escaped, any of them, in any case: octal (``\143``), ``\x6A``,
#   ``\u0063``, ``\u{63}``, ``\U00000063``, ``%63``, ``%u0063``, ``&#x63;``, ``&#99;`` and
#   XML's named ``&amp;`` and the like: the output with each escape read as its character
_ESCAPED_CHAR = re.compile(
    r"\\(?:[xX](?P<x>[0-9a-fA-F]{2})|u\{(?P<braced>[0-9a-fA-F]{1,6})\}|"
    r"u(?P<u>[0-9a-fA-F]{4})|U(?P<U>[0-9a-fA-F]{8})|(?P<octal>[0-7]{1,3}))|"
    r"&#(?:[xX](?P<hexref>[0-9a-fA-F]{1,8})|(?P<ref>[0-9]{1,10}));?|"
    r"%(?:u(?P<pu>[0-9a-fA-F]{4})|(?P<percent>[0-9a-fA-F]{2}))|"
    r"&(?P<named>amp|lt|gt|quot|apos);")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
# - any of its forms of 8 characters or more base64-encoded (so base64 twice, either one
#   wrapped): each run of base64 (either alphabet) decoded from each of its first four
#   characters
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_\-]{12,}+")
_URLSAFE = str.maketrans("-_", "+/")


def _escaped_char(match: re.Match[str]) -> str:
    """The one character an escape (:data:`_ESCAPED_CHAR`) stands for."""
    named = match.group("named")
    if named is not None:
        return _NAMED[named]
    digits = next(d for d in match.groups() if d is not None)
    base = 8 if match.group("octal") is not None else 10 if match.group("ref") else 16
    code = int(digits, base)
    return chr(code) if code < 0x110000 else "\ufffd"


def _mapped(compact: str, pattern: re.Pattern[str], one: bool) -> tuple[list[int], list[int]]:
    """For each character of ``compact`` with each match of ``pattern`` replaced by one
    character (``one``) or none: where in ``compact`` it starts and ends."""
    starts: list[int] = []
    ends: list[int] = []
    last = 0
    for match in pattern.finditer(compact):
        starts += range(last, match.start())
        ends += range(last + 1, match.start() + 1)
        if one:
            starts.append(match.start())
            ends.append(match.end())
        last = match.end()
    starts += range(last, len(compact))
    ends += range(last + 1, len(compact) + 1)
    return starts, ends


class _Forms:
    """Forms of known secrets to look for: longest first, and past ``_MANY_FORMS`` (a
    preview's Secret of thousands of keys, each value in some twenty forms) indexed once by
    their first ``_FORM_ANCHOR`` characters (every form but a short secret itself is that
    long: :func:`_forms`), so that a view is read once for all of them, not once a form."""

    def __init__(self, forms: Iterable[str]) -> None:
        self.all = sorted(set(forms), key=len, reverse=True)
        self._index: tuple[dict[str, list[str]], dict[int, set[str]]] | None = None

    @property
    def many(self) -> bool:
        return len(self.all) > _MANY_FORMS

    def index(self) -> tuple[dict[str, list[str]], dict[int, set[str]]]:
        if self._index is None:
            anchored: dict[str, list[str]] = {}
            short: dict[int, set[str]] = {}
            for form in self.all:
                if len(form) >= _FORM_ANCHOR:
                    anchored.setdefault(form[:_FORM_ANCHOR], []).append(form)
                elif form:
                    short.setdefault(len(form), set()).add(form)
            self._index = anchored, short
        return self._index


_MANY_FORMS = 32
_FORM_ANCHOR = 8


def _search(view: str, forms: _Forms, cut: bool,
            partial: bool = False) -> list[tuple[int, int]]:
    """Where in ``view`` each of ``forms`` is, and with ``cut`` a start of one ending it
    (``partial``: or before its last character, what an escape cut short reads as)."""
    if forms.many and not cut:
        return _search_many(view, forms)
    spans = []
    for form in forms.all:
        at = view.find(form)
        while at != -1:
            spans.append((at, at + len(form)))
            at = view.find(form, at + len(form))
        start = _cut_start(view, form) if cut else None
        if start is None and cut and partial:
            tail = view[-len(form):-1]
            back = _cut_start(tail, form)
            start = None if back is None else len(view) - 1 - len(tail) + back
        if start is not None:
            spans.append((start, len(view)))
    return spans


def _search_many(view: str, forms: _Forms) -> list[tuple[int, int]]:
    """Where in ``view`` each of ``forms`` is (every occurrence), in one pass over it: a
    form by its first ``_FORM_ANCHOR`` characters, a shorter one by a window of its length."""
    anchored, short = forms.index()
    spans = []
    if anchored:
        for at in range(len(view) - _FORM_ANCHOR + 1):
            found = anchored.get(view[at:at + _FORM_ANCHOR])
            if found:
                spans += [(at, at + len(f)) for f in found if view.startswith(f, at)]
    for size, group in short.items():
        spans += [(at, at + size) for at in range(len(view) - size + 1)
                  if view[at:at + size] in group]
    return spans


def _base64_view(compact: str, offset: int) -> tuple[str, list[tuple[int, int]]]:
    """The base64 runs of ``compact`` decoded from their ``offset``-th character, as Latin-1
    text without whitespace, one after another with a NUL between them; and (where each run's
    decoded part starts in ``compact``, its length there) for each."""
    pieces = []
    for match in _BASE64_RUN.finditer(compact):
        size = (match.end() - match.start() - offset) // 4 * 4
        if size >= 12:
            pieces.append((match.start() + offset, size))
    joined = "".join(compact[at:at + size] for at, size in pieces).translate(_URLSAFE)
    data = base64.b64decode(joined).decode("latin-1")
    parts, at = [], 0
    for _, size in pieces:
        parts.append(data[at:at + size // 4 * 3])
        at += size // 4 * 3
    return "\0".join("".join(part.split()) for part in parts), pieces


def _base64_mapped(compact: str, offset: int,
                   pieces: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """For each character of :func:`_base64_view`, the characters of ``compact`` its bits
    are in (where they start and end)."""
    joined = "".join(compact[at:at + size] for at, size in pieces).translate(_URLSAFE)
    data = base64.b64decode(joined).decode("latin-1")
    starts: list[int] = []
    ends: list[int] = []
    done = 0
    for index, (at, size) in enumerate(pieces):
        if index:
            starts.append(at)
            ends.append(at)
        for j in range(size // 4 * 3):
            if not data[done + j].isspace():
                starts.append(at + 4 * (j // 3) + j % 3)
                ends.append(at + 4 * (j // 3) + j % 3 + 2)
        done += size // 4 * 3
    return starts, ends


def _found(compact: str, forms: set[str], hexes: set[str], folded: set[str],
           cut: bool) -> list[tuple[int, int]]:
    """Where in ``compact`` (output without whitespace) a known secret is, as (start, end): one
    of its literal ``forms`` (:func:`_forms`); it in any case (``folded``: in lowercase), also
    with anything but letters and digits between its own (:data:`_NOT_ALNUM`); its hex
    (``hexes``) among the output's hex digits (:data:`_HEX_NOISE`); one of its forms with any
    of its characters escaped (:data:`_ESCAPED_CHAR`) or base64-encoded (:data:`_BASE64_RUN`).
    With ``cut``, also a start of one ending the output (not base64-encoded). Linear in
    ``compact``: each view is built in one pass over it, and where its characters come from
    only when a form is found."""
    literal = _Forms(forms)
    spans = _search(compact, literal, cut)
    lower = compact.translate(_ASCII_LOWER)
    spans += _search(lower, _Forms(folded), cut)  # (a character for a character)
    found = _search(_NOT_ALNUM.sub("", lower), _Forms(_NOT_ALNUM.sub("", f) for f in folded),
                    cut)
    if found:
        starts, ends = _mapped(lower, _NOT_ALNUM, False)
        spans += [(starts[a], ends[b - 1]) for a, b in found]
    found = _search(_HEX_NOISE.sub("", lower), _Forms(hexes), cut)
    if found:
        starts, ends = _mapped(lower, _HEX_NOISE, False)
        spans += [(starts[a], ends[b - 1]) for a, b in found]
    if "\\" in compact or "%" in compact or "&" in compact:
        escaped = _ESCAPED_CHAR.sub(_escaped_char, compact)
        found = _search(escaped, literal, cut, partial=True) if escaped != compact else []
        if found:
            starts, ends = _mapped(compact, _ESCAPED_CHAR, True)
            spans += [(starts[a], ends[b - 1]) for a, b in found]
    encoded = _Forms(f for f in forms if len(f) >= 8)
    for offset in range(4):
        view, pieces = _base64_view(compact, offset)
        found = _search(view, encoded, False)
        if found:
            starts, ends = _base64_mapped(compact, offset, pieces)
            spans += [(starts[a], ends[b - 1]) for a, b in found]
    return spans


# A line of a hex dump (xxd, hexdump -C, od -t x1, -b or -c): an offset, then the bytes, and
# (xxd's after two spaces, hexdump's between bars) the characters they are
_DUMP_LINE = re.compile(r"(?m)^[0-9a-fA-F]{6,16}+(?P<colon>:?)[ \t]++(?P<rest>[^\n]*+)")


def _dump_views(text: str, keep: list[int]) -> list[list[int]]:
    """When ``text`` has lines of a hex dump (:data:`_DUMP_LINE`), the characters of ``keep``
    but their offsets and characters, and but their offsets and bytes: a secret dumped is
    then one run of hex (or octal) digits in one, and of its characters in the other."""
    lines = list(_DUMP_LINE.finditer(text))
    if not lines:
        return []
    no_chars = bytearray(len(text))  # what the view of the bytes leaves out
    no_bytes = bytearray(len(text))
    for line in lines:
        at, rest = line.start("rest"), line.group("rest").rstrip()
        no_chars[line.start():at] = no_bytes[line.start():at] = b"\x01" * (at - line.start())
        bar = rest.find("|")
        split = bar if bar != -1 and rest.endswith("|") else rest.find("  ") if \
            line.group("colon") else -1
        if split == -1:  # od: the bytes (or characters) only
            continue
        no_chars[at + split:at + len(rest)] = b"\x01" * (len(rest) - split)
        no_bytes[at:at + split + 1] = b"\x01" * (split + 1)
        if bar == split:  # the closing bar
            no_bytes[at + len(rest) - 1] = 1
    return [[i for i in keep if not no_chars[i]], [i for i in keep if not no_bytes[i]]]


def _redact_known(text: str, secrets: Iterable[str], cut: bool = False, *,
                  raw: bool = False) -> str:
    """Every occurrence of each secret (and its encodings: :func:`_found`), whitespace inside
    ignored; and, when the text may end inside one (``cut``), a start of one at its end.
    ``raw``: the text is not cleaned yet: it is read as :func:`_raw_views` says."""
    secrets = [s for s in secrets if s]
    wanted = {form for s in secrets for form in _forms(s)}
    wanted = {w for w in ("".join(f.split()) for f in wanted) if w}
    if not wanted:
        return text
    # (at least 8 bytes: ordinary text never holds these by chance)
    hexes = {h for h in (s.encode("utf-8").hex() for s in secrets) if len(h) >= 16}
    folded = {f for f in ("".join(s.split()).translate(_ASCII_LOWER) for s in secrets)
              if len(_NOT_ALNUM.sub("", f)) >= 16}
    plain = text.isascii()  # (nothing unseen: the one test per character)
    views = _raw_views(text) if raw else [[i for i, char in enumerate(text) if not (
        char.isspace() or (not plain and _unseen(char)))]]
    views += _dump_views(text, views[0])
    spans = []
    for keep in views:
        compact = _as_ascii("".join(text[i] for i in keep))
        spans += [(keep[start], keep[end - 1] + 1)
                  for start, end in _found(compact, wanted, hexes, folded, cut)]
    return _apply(text, spans)


# ---------------------------------------------------------------------------------- names

def _trie(words: Iterable[str]) -> str:
    """A pattern of any one of ``words`` with their common starts written once
    (``mysql|mysqldump`` is ``mysql(?:dump)?+``): where none starts, the pattern gives up at
    the first letters, not word by word. A word that starts a longer one is not tried where
    the longer one is (``?+``): the same for finding any of them, and for a name that no
    letter, digit, ``-`` or ``_`` may follow (a tool's)."""
    firsts: dict[str, list[str]] = {}
    for word in sorted(set(words)):
        firsts.setdefault(word[0], []).append(word[1:])
    parts = []
    for head, rests in firsts.items():
        while "" not in rests and len({rest[0] for rest in rests}) == 1:  # (one way on)
            head, rests = head + rests[0][0], [rest[1:] for rest in rests]
        longer = [rest for rest in rests if rest]
        parts.append(re.escape(head) + (f"(?:{_trie(longer)})" if longer else "") +
                     ("?+" if longer and "" in rests else ""))
    return "|".join(parts)


_CREDENTIAL_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey",
                     "privatekey", "clientkey", "keydata", "accesskey", "credential",
                     "cookie", "sessionid", "authorization", "signingkey", "encryptionkey",
                     "connectionstring", "connstr", "requirepass", "masterauth")
_CREDENTIAL_SEGMENTS = frozenset({"pwd", "pass", "pw", "auth", "key", "sas", "otp", "pin",
                                  "creds", "cred", "sig", "signature", "salt", "hmac", "psk",
                                  "authkey", "masterkey", "privkey"})
# a last word ending in a credential's (``dbpass``, ``smtppass``, ``storepass``, ``rootpw``,
# ``ldap_bindpw``, ``dbpwd``, ``pass1``), but these words
_CREDENTIAL_ENDINGS = ("pass", "pwd", "pw")
_NOT_CREDENTIAL_ENDINGS = frozenset({
    "bypass", "compass", "surpass", "overpass", "underpass", "trespass", "impass", "encompass",
    "lowpass", "highpass", "bandpass", "allpass", "multipass", "onepass", "firstpass",
    "subpass", "renderpass", "singlepass", "twopass"})
# ``..._id`` names an identifier, not a value, but after these (``VAULT_SECRET_ID``, an
# AppRole's secret; ``SESSION_ID``, ``ASP.NET_SessionId``)
_SECRET_IDS = frozenset({"secret", "session"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# A last name segment saying the value is about a credential, not the credential itself.
_NOT_A_VALUE = frozenset({"id", "file", "path", "size", "type", "length", "count", "bits",
                          "ttl", "expiry", "expires", "expiration", "version", "mode",
                          "algorithm", "seconds", "minutes", "hours", "days", "duration",
                          "timeout", "interval", "stdin", "name", "names", "ref"})
# Values that carry no secret whatever their key says (automountServiceAccountToken: true).
_NOT_SECRET_VALUES = frozenset({"true", "false", "yes", "no", "null", "none", "~", ""})
# What a table's other columns hold beside a name (``auth-service   Running``, the two columns
# of ``-o custom-columns``): a state as kubectl, helm and docker print it, a ready count
# (``1/1``), an age as kubectl prints it (``45s``, ``5m12s``, ``2y100d``), an address
# (``10.0.0.7``, ``10.0.0.7:80``), a time (``2026-12-04T17:00:00Z``: a creationTimestamp).
# Only a table's cell is read so: a value a name sets (``<password>Running</password>``,
# ``IDENTIFIED BY '1/1'``) is the credential whatever it is.
_STATES = frozenset({
    "running", "pending", "succeeded", "failed", "unknown", "completed", "complete", "error",
    "containercreating", "crashloopbackoff", "imagepullbackoff", "errimagepull", "terminating",
    "evicted", "oomkilled", "podinitializing", "createcontainerconfigerror", "invalidimagename",
    "active", "bound", "available", "released", "lost", "ready", "notready", "suspended",
    "deployed", "superseded", "uninstalled", "uninstalling", "pending-install",
    "pending-upgrade", "pending-rollback", "exited", "created", "restarting", "paused", "dead",
    "healthy", "unhealthy", "clusterip", "nodeport", "loadbalancer", "externalname"})
_TABLE_CELL = re.compile(r"[0-9]{1,3}+/[0-9]{1,3}+|[0-9]{1,3}+(?:s|m(?:[0-9]{1,2}+s)?+|"
                         r"h(?:[0-9]{1,2}+m)?+|d(?:[0-9]{1,2}+h)?+|y(?:[0-9]{1,3}+d)?+)|"
                         r"[0-9]{1,3}+(?:\.[0-9]{1,3}+){3}+(?::[0-9]{1,5}+)?+|"
                         r"[0-9]{4}-[0-9]{2}-[0-9]{2}t[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9}+)?+"
                         r"(?:z|[+-][0-9]{2}:[0-9]{2})")
# What kubectl prints in a cell in place of a value (``<none>``, ``<pending>``, ``<no value>``,
# ``<set to the key 'k' in secret 's'>``); not any value that starts with ``<`` (a password may)
_PLACEHOLDER_CELL = re.compile(r"<[a-z]++(?: [a-z]++)*+>|<set to the key '[^'\n]*+' "
                               r"(?:in secret|of config map) '[^'\n]*+'>")
# a resource's name of more than one word (``auth-service``, ``token-refresher``): what a row
# of ``-o custom-columns`` starts with, unlike a directive (``requirepass``, ``AUTH``)
_RESOURCE_NAME = re.compile(r"[a-z0-9]++(?:-[a-z0-9]++)++")


def _no_secret(value: str, *, cell: bool = False) -> bool:
    """Whether a value named like a credential plainly is none: ``true``, ``no``; in a table's
    ``cell`` also a placeholder, a state, a ready count, an age or an address (see
    ``_STATES``)."""
    plain = value.strip().strip("\"',").lower()
    if plain in _NOT_SECRET_VALUES:
        return True
    return cell and (plain in _STATES or _PLACEHOLDER_CELL.fullmatch(plain) is not None or
                     _TABLE_CELL.fullmatch(plain) is not None)


# What kubectl describe prints in place of a value: it names where the value is, not what
_PLACEHOLDER = re.compile(r"<(?:none|nil|unset)>[ \t]*+(?:\n|$)|<set to the key '[^'\n]*+' "
                          r"(?:in secret|of config map) '[^'\n]*+'>")


# a Kubernetes kind's Go type, its package an API version (``*v1.Secret``, ``corev1.Secret``,
# ``v1beta1.TokenReview``): what a client's log names a kind by (``failed to list *v1.Secret:
# secrets is forbidden``), not a value. The version bare or after the alias of a built-in API
# group client-go's code imports it by, a pointer's ``*`` before it or not: not any word
# ending in ``v`` and digits (``env1.Password``, ``kv1.Secret``, ``srv1.Token`` name a value);
# and only the built-in kinds named like a credential (``v1.Password``, ``metav1.Token`` name
# a value)
_API_KIND = re.compile(r"(?<![A-Za-z0-9_.\-])\*?+(?:core|apps|batch|rbac|networking|policy|"
                       r"storage|autoscaling|admissionregistration|apiextensions|"
                       r"apiregistration|authentication|authorization|certificates|"
                       r"coordination|discovery|events|node|scheduling|flowcontrol|resource|"
                       r"meta|extensions)?+v[0-9]++(?:(?:alpha|beta)[0-9]++)?+"
                       r"\.(?:Secret|SecretList|TokenReview|TokenRequest)\Z")

# How long a name may be for its reading to be remembered (:func:`credential_name`, 4096 of
# them at most, for one text's redaction): a key's or a flag's name; a longer string read as
# one (a table's cell, a line) is read each time, so that the memory stays small
_NAME_CACHED = 64


def credential_name(name: str) -> bool:
    """Whether a key, variable or flag name names a credential (``DB_PASSWORD``, ``apiKey``,
    ``client-key-data``, ``pwd``, ``x-auth-token``; not ``secretName``, ``tokenizer`` or a
    kind's Go type, ``*v1.Secret``). Remembered for short names: output repeats its keys on
    thousands of lines."""
    return _credential_name(name) if len(name) <= _NAME_CACHED else _read_name(name)


def _read_name(name: str) -> bool:
    plain = name.strip("\"'-").lower()
    if not plain or plain in ("key", "pin") or _API_KIND.search(name) is not None:
        return False
    segments = [s for s in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", name.strip("\"'-")).lower())
                if s]
    if segments and segments[-1] in _NOT_A_VALUE and not (
            segments[-1] == "id" and len(segments) > 1 and segments[-2] in _SECRET_IDS):
        return False  # private_key_file: where, not what
    squashed = "".join(segments).replace("tokeniz", "")  # (tokenizer, tokenize_chinese)
    if any(word in squashed for word in _CREDENTIAL_WORDS):
        return True
    # a data source name: SENTRY_DSN, pgdsn, PGDSN2, dsnString; not three letters inside a
    # generated name (web-lkgdsntj)
    last = segments[-1].rstrip("0123456789") if segments else ""
    if last.endswith(_CREDENTIAL_ENDINGS) and last not in _NOT_CREDENTIAL_ENDINGS:
        return True
    return any(s in _CREDENTIAL_SEGMENTS or s.startswith("dsn") or
               s.rstrip("0123456789").endswith("dsn") for s in segments)


_credential_name = functools.lru_cache(maxsize=4096)(_read_name)  # (a pure function)


# ---------------------------------------------------------------------------------- structure

_YAML_KEY = re.compile(r"""^(?P<indent>[ \t]*+)(?P<dash>-[ \t]++)?(?P<key>"[^"]*+"|'[^']*+'|"""
                       r"""[^\s:#'"](?:[^\s:#]++|[ \t]++(?=[^\s:#]))*+)"""
                       r"""[ \t]*+:(?:[ \t]++(?P<value>.*+))?$""")
# a key of words as ``kubectl describe`` prints a custom resource's fields (``Client Secret:``,
# ``API Keys:``), unlike a sentence ending in a colon (``failed to refresh token:``)
_DESCRIBED_KEY = re.compile(r"[A-Z][A-Za-z0-9]*+(?: [A-Z][A-Za-z0-9]*+){1,3}+")


def _described(key: str) -> str:
    """A field's name as ``kubectl describe`` prints it read as the object's (``Secret Key
    Ref`` is ``secretKeyRef``, ``Name`` ``name``); any other key as it is."""
    if not key[:1].isupper() or not _DESCRIBED_KEY.fullmatch(key if " " in key else key + " A"):
        return key
    first, *rest = key.split(" ")
    return first.lower() + "".join(rest)


# YAML node properties before a value: an anchor (``&name``) or a tag (``!!binary``)
_PROPERTIES = re.compile(r"(?:[&!][^\s,\[\]{}]*+(?:[ \t]++|$))*+")
_ALIAS = re.compile(r"\*(?P<name>[^\s,\[\]{}]++)\s*+$")
_ANCHOR = re.compile(r"&(?P<name>[^\s,\[\]{}]++)[ \t]++")
# where a flow mapping of Secret values opens (``data: {``, ``"stringData":{``)
_FLOW_OPEN = re.compile(r"""(?<![A-Za-z0-9_])["']?(?P<kind>stringData|data|binaryData)["']?"""
                        r"""\s*+:[ \t]*+(?:[&!][^\s,\[\]{}]*+[ \t]++)*+\{""")
# a string starts only at a quote no backslash escapes: a line of ``\"`` stays linear
_JSON_PAIR = re.compile(r'(?<!\\)"(?P<key>(?:[^"\\]|\\.)*+)"\s*+:\s*+'
                        r'(?P<value>"(?:[^"\\]|\\.)*+"?|\{|\[|[^\s,\]}]++)')
_BASE64_VALUE = re.compile(r"[A-Za-z0-9+/]{4,}+={0,2}")
_BLOCK_SCALAR = re.compile(r"[|>][-+0-9]*+\s*+(?:#.*+)?")
_SIZE_ONLY = re.compile(r"[0-9]++ bytes")
_SECRET_KIND = re.compile(r"""(?:^|[\s{,])"?kind"?\s*+:\s*+"?Secret\b""", re.MULTILINE)
_CONFIGMAP_KIND = re.compile(r"""(?:^|[\s{,])"?kind"?\s*+:\s*+"?ConfigMap\b""", re.MULTILINE)
_DATA_KEYS = ("data", "stringData", "binaryData")
_TAG = r"(?:![^\s,]*+\s++)?"  # a YAML tag before a value: !!str
_ENV_NAME = re.compile(r"""\bname["']?\s*+:\s*+""" + _TAG +
                       r"""["']?(?P<name>[A-Za-z0-9_.\-]++)""")
_ENV_VALUE = re.compile(r"""\bvalue["']?\s*+:\s*+(?P<value>.*+)$""")
# An object without nested ones (``{"name": "API_TOKEN", "value": "..."}``, flow or JSON;
# braces inside its quoted strings are no nesting: ``"value": "{x"``): a ``{``, then quoted
# strings (a quote opens one after a space, ``,``, ``:``, ``[`` or ``{``) and characters but
# braces, then ``}``. Found by :func:`_flat_objects`, not by one pattern: a pattern tried from
# every ``{`` reads the rest again from each one inside a string (``{"a{" "b{" ...``).
_FLAT_EVENT = re.compile(r"""[{}"']""")
_FLAT_STRING = re.compile(r"""(?:"(?:[^"\\\n]|\\.){0,4096}+"|'(?:[^'\n]|''){0,4096}+')""")
_FLAT_QUOTE_AFTER = frozenset(",:[{")
_OBJECT_VALUE = re.compile(r"""\bvalue["']?\s*+:\s*+""" + _TAG +
                           r"""(?:"(?P<dq>(?:[^"\\]|\\.)*+)"|"""
                           r"""'(?P<sq>(?:[^']|'')*+)'|(?P<plain>[^,}\]\s][^,}\]]*+))""")
# ``["--token", "VALUE"]``, ``[-p, VALUE]``: a credential flag, then its value as the next item
_ARRAY_FLAG = re.compile(r"""(?<![A-Za-z0-9_-])(?P<q>["']?)(?P<flag>--?[A-Za-z][A-Za-z0-9_-]*+)"""
                         r"""(?P=q)[ \t]*+,\s*+(?:"(?P<dq>(?:[^"\\]|\\.){0,4096}+)"|"""
                         r"""'(?P<sq>(?:[^']|''){0,4096}+)'|"""
                         r"""(?P<plain>[^\s,\]}][^,\]}]*+))""")  # (never fails: unbounded)
# ``[--token=two words, ...]``: a credential flag and its value as one flow item
_FLOW_ASSIGNMENT = re.compile(r"""(?<=[\[,])\s*+(?P<q>["'])?(?P<flag>--?[A-Za-z][A-Za-z0-9_-]*+)="""
                              r"""(?P<value>(?(q)[^"']++|(?:[^,\]}\n]|"""
                              r"""\n(?![ \t]*+[A-Za-z0-9_.\-"']++[ \t]*+:))++))""")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"?')
#: How deep the collections below a credential key are read entry by entry (deeper, all of
#: it is the value): each level reads its text again, so linear time stays linear.
_MAX_NESTED_FLOWS = 4

def _flat_objects(text: str) -> list[tuple[int, int]]:
    """Where the objects without nested ones are in ``text`` (see :data:`_FLAT_EVENT`), as
    (start, end), leftmost first and not overlapping. Read from each ``{`` outside the objects
    found, in linear time: a reading outside any string takes the same way from a quote on,
    whichever ``{`` it started from, so where it ends is kept for each quote it passed."""
    ends: dict[int, int] = {}  # a quote read outside any string -> where that reading ends
    found: list[tuple[int, int]] = []
    at = text.find("{")
    while at != -1:
        passed, where = [], at + 1
        while True:
            event = _FLAT_EVENT.search(text, where)
            if event is None:
                end = len(text)
                break
            where = event.start()
            if where in ends:
                end = ends[where]
                break
            if text[where] in "{}":
                end = where
                break
            passed.append(where)
            before = text[where - 1]
            string = _FLAT_STRING.match(text, where) if (
                before.isspace() or before in _FLAT_QUOTE_AFTER) else None
            where = where + 1 if string is None else string.end()
        ends.update(dict.fromkeys(passed, end))
        if end < len(text) and text[end] == "}":
            found.append((at, end + 1))
            at = text.find("{", end + 1)
        else:
            at = text.find("{", at + 1)
    return found

# a key, then a flow collection as its value, anywhere on a line (compact JSON, an
# annotation's last-applied configuration, ``apiKeys: [a, b]``): a credential key's whole
# collection is its value
_KEY_OPENS_FLOW = re.compile(r"""(?<![A-Za-z0-9_.\-/])(?P<q>["']?+)"""
                             r"""(?P<key>[A-Za-z0-9_.\-/]{1,200}+)(?P=q)[ \t]*+:[ \t]*+(?=[{\[])""")
_COLON = re.compile(r"\s*+:")
# a flow mapping's ``key: value`` (after ``{`` or ``,``): a plain value with spaces to the next
# ``,`` (over lines, short of one that starts a key), a quoted one over lines
_FLOW_PAIR = re.compile(
    r"""(?<=[{,])\s*+(?P<key>"[^"\n]{1,200}+"|'[^'\n]{1,200}+'|[A-Za-z0-9_.\-/]{1,200}+)"""
    r"""\s*+:[ \t]++(?P<value>"(?:[^"\\]|\\.){0,4096}+"?|'(?:[^']|''){0,4096}+'?|"""
    r"""[^\s,{}\[\]"'](?:[^,{}\[\]\n]|\n(?![ \t]*+[A-Za-z0-9_.\-"']++[ \t]*+:))*+)""")
# YAML's explicit keys (``? !!str "password"`` then ``: !!str "VALUE"``)
_EXPLICIT_KEY = re.compile(r"""[ \t]*+\?[ \t]++(?:![^\s]*+[ \t]++)?(?P<key>[^\n]++)""")
_EXPLICIT_VALUE = re.compile(r"""[ \t]*+:[ \t]++(?:![^\s]*+[ \t]++)?(?P<value>[^\n]++)""")
_QUOTED = re.compile(r""""(?:[^"\\]|\\.)*+"?|'(?:[^']|'')*+'?""")
# ``- --token`` or ``"--token",``: a flag alone as a sequence item; then its value item
_SEQUENCE_FLAG = re.compile(r"""[ \t]*+(?:-[ \t]++)?(["']?)(?P<flag>--?[A-Za-z][A-Za-z0-9_-]*+)"""
                            r"""\1[ \t]*+,?[ \t]*+$""")
_SEQUENCE_ASSIGNMENT = re.compile(r"[ \t]*+-[ \t]++[\"']?"
                                  r"(?P<flag>-{0,2}+[A-Za-z_][A-Za-z0-9_.-]*+)=(?P<value>[^\n]++)")
_SEQUENCE_ITEM = re.compile(r"""[ \t]*+(?:-[ \t]++)?["']?"""
                            r"""(?P<value>(?:\S(?:[^"'\s,]|[ \t]++[^\s"',])*+)?)""")


# keys that hold their parent's value (``password:`` / ``  value: VALUE``), and the last
# segments of a parent that names where a credential is, not what (``secretKeyRef:`` /
# ``  key: password``, a volume's ``secret:`` / ``  secretName: db``)
_NEUTRAL_KEYS = frozenset({"value", "val", "key", "data", "content", "contents", "plaintext",
                           "text", "raw", "string", "base64", "b64"})
_REFERENCE_SEGMENTS = frozenset({"ref", "refs", "reference", "selector", "name", "names",
                                 "source", "from"})


# the last segments of a key nested under a credential one whose scalar value names no value:
# who it is, where the value is, what it is about (``user``, ``secretName``, ``path``,
# ``expirySeconds``); what is nested below such a key is read as values all the same
_NAMES_NO_VALUE = _REFERENCE_SEGMENTS | _NOT_A_VALUE | {
    "items", "user", "username", "login", "email", "enabled", "kind", "apiversion",
    "namespace", "description"}
# Kubernetes' references, the only mappings under a credential key whose contents are kept:
# each one's own fields (where a value is: a Secret's name and key, a field's path), and the
# references nested in it (``valueFrom:`` / ``  secretKeyRef:``; a Secret volume's ``items``,
# each a key, a path and a mode). Any other child of one holds a value.
_REFERENCES: dict[str, frozenset[str]] = {
    "valueFrom": frozenset({"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}),
    "secretKeyRef": frozenset({"name", "key", "optional"}),
    "configMapKeyRef": frozenset({"name", "key", "optional"}),
    "fieldRef": frozenset({"apiVersion", "fieldPath"}),
    "resourceFieldRef": frozenset({"containerName", "resource", "divisor"}),
    # a projected volume's source: which token the kubelet asks for and where it writes it
    "serviceAccountToken": frozenset({"audience", "expirationSeconds", "path"}),
    "items": frozenset({"key", "path", "mode"}),
}
_NO_REFERENCE = "*"  # what is nested in a reference's other child: every scalar a value


def _nested_value(key: str) -> bool:
    """Whether a key nested under a credential one holds (part of) its value."""
    segments = [s for s in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", key).lower()) if s]
    return not segments or segments[-1] not in _NAMES_NO_VALUE


def _neutral_parent(key: str) -> bool:
    """Whether a key's neutral children (``value``, ``key``) hold a credential."""
    return credential_name(key) and \
        re.split(r"[^a-z0-9]+", _CAMEL.sub("_", key).lower())[-1] not in _REFERENCE_SEGMENTS


# a key in a sentence: a logfmt pair's quoted value (``msg="auth: login ok"``), or an event's
# quoted name (:func:`_event_name`): no YAML key
_SENTENCE_KEY = re.compile(r"""[^\n]*?=["'][^\n]*+""")
# what follows an event's `` : ``: the kubelet's sentences about a volume's source
# (``secret "db-creds" not found``, ``failed to sync secret cache``), not a value
_EVENT_REST = re.compile(r"""(?:(?:secret|configmap|object)[ \t]++["']|failed[ \t]++to[ \t]|"""
                         r"""couldn't[ \t])""")


def _sentence_key(match: re.Match[str]) -> bool:
    """Whether a YAML key :data:`_YAML_KEY` read from a line is a sentence's words
    (:data:`_SENTENCE_KEY`, :func:`_event_name`)."""
    if _SENTENCE_KEY.fullmatch(match.group("key").strip()) is not None:
        return True
    return _event_name(match.string, match.start("key"), match.end("key"),
                       match.string[match.end("key"):], match.group("value") or "")


def _event_name(text: str, start: int, end: int, sep: str, value: str) -> bool:
    """Whether the key ``text[start:end]`` (its quoted last word ending at ``end``, read
    before ``sep`` and ``value``) is the name an event quotes after a word, the kubelet's
    ``MountVolume.SetUp failed for volume "db-creds" : secret "db-creds" not found``:
    ``volume``, a space, the quoted name, a space before the colon, then one of the kubelet's
    sentences (:data:`_EVENT_REST`). Nothing else is (``INFO "api_key": X``, ``password "a":
    X``, ``using "api_key" : sk live_x``, ``volume "password" : red dragon`` assign a
    value)."""
    quote = text[end - 1:end]
    if quote not in ("\"", "'") or re.match(r"[ \t]++:[ \t]++", sep) is None or \
            _EVENT_REST.match(value) is None:
        return False
    start = max(start, end - 256)  # (the word before is all it reads: linear on a long line)
    opening = text.rfind(quote, start, end - 1)
    before = text[start:opening] if opening > start else ""
    if not before or before[-1] not in " \t":
        return False
    return before.split()[-1:] == ["volume"]


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'" else key


def _value_span(line: str, start: int) -> tuple[int, int] | None:
    """The span of a scalar value that starts at ``start`` (quotes and a trailing comma kept
    outside), or None for an empty value, a flow collection or a block indicator."""
    end = len(line)
    value = line[start:end].rstrip()
    if not value or value[0] in "{[" or value.strip("\"',").lower() in _NOT_SECRET_VALUES or \
            _PLACEHOLDER.match(value):
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


# what follows a value in a flow collection: closing brackets, then a ``,`` and a space or the end
_FLOW_REST = re.compile(r"(?:[}\]][ \t]*+)*+(?:,(?:[ \t]|$)|$)")


def _plain_length(raw: str, cut: str) -> int:
    """The length of a value cut at a flow indicator (``value: abc}, {name: ...``); when what
    follows the cut is no flow collection's, the value is a block scalar holding the indicator
    (``value: a}b,c``): all of ``raw``."""
    if cut[:1] in "\"'" or _FLOW_REST.match(raw, len(cut)) is not None:
        return len(cut.rstrip())
    return len(raw.rstrip())


class _Structure:
    """Line-by-line reading of YAML and pretty JSON, collecting the spans to redact."""

    def __init__(self, text: str, beyond: tuple[bool, bool] = (False, False)) -> None:
        """``beyond``: whether the text past a head being read names a Secret's kind, and
        holds the word ``Secret`` at all (see :func:`redact_head`)."""
        self.text = text
        self.secret_kind = beyond[0] or bool(_SECRET_KIND.search(text))
        # only ConfigMaps: their data is plain configuration, read by the key rules
        self.configmaps_only = not self.secret_kind and not beyond[1] and \
            bool(_CONFIGMAP_KIND.search(text))
        self.spans: list[tuple[int, int]] = []
        self.block: tuple[int, str] | None = None  # (indent, kind) of an open YAML block
        self.scalar_indent: int | None = None  # a block scalar under a credential key
        self.json_block: int | None = None  # nesting depth of an open JSON data object
        self.json_depth = 0
        self.env_pending = 0  # lines left to find the value of a credential env entry
        # (start, end, lines left, indent) of a value whose entry's name is still to come
        self.env_recent: tuple[int, int, int, int] | None = None
        self.flag_pending = False  # the previous sequence item was a credential flag
        self.explicit_key = False  # the previous line was ``? KEY`` naming a credential
        self.key_pending: int | None = None  # indent of a credential key with its value below
        self.pending_key = ""  # that key
        # (indent, whether its sequence is at its own indent) of a credential key whose
        # nested keys hold its value; the keys open below it, innermost last: (indent, the
        # reference it is, "" for any other mapping, _NO_REFERENCE below a reference's other
        # child)
        self.nested: tuple[int, bool] | None = None
        self.nested_open: list[tuple[int, str]] = []
        self.described = False  # in a ``kubectl describe configmap`` value (``KEY:``/``----``)
        self.lines: list[str] = []
        self.index = 0
        self.flow_end = 0  # how far flow collections were read (never twice: linear time)
        self.anchors: dict[str, tuple[int, int]] = {}  # YAML anchor -> its scalar's span

    def run(self) -> list[tuple[int, int]]:
        offset = 0
        self.lines = self.text.split("\n")
        for index, line in enumerate(self.lines):
            self.index = index
            self._line(line, offset)
            offset += len(line) + 1
        if "{" in self.text:
            self._flows()
            self._env_objects()
        if "{" in self.text or "[" in self.text:
            self.flow_end = 0  # each collection read once (linear time)
            for opened in _KEY_OPENS_FLOW.finditer(self.text):
                # not a reference (``secretKeyRef: {name: db, key: password}``): it says where
                # a value is, and its fields stay, as on the block reader's lines
                key = opened.group("key")
                if opened.end() >= self.flow_end and _neutral_parent(key):
                    self._flow(opened.end(), key if key in _REFERENCES and
                               self.text[opened.end()] == "{" else "nested")
        if "{" in self.text:
            for pair in _FLOW_PAIR.finditer(self.text):
                if credential_name(_unquote(pair.group("key"))):
                    start, raw = pair.start("value"), pair.group("value").rstrip()
                    if raw[0] in "\"'":  # the quotes stay
                        start, raw = start + 1, raw[1:-1] if raw.endswith(raw[0]) else raw[1:]
                    self._add(0, (start, start + len(raw)))
        if "," in self.text:
            for flag in _ARRAY_FLAG.finditer(self.text):
                if _credential_flag(flag.group("flag")):
                    value = next(g for g in ("dq", "sq", "plain") if flag.group(g) is not None)
                    start, _ = flag.span(value)
                    self._add(0, (start, start + len(flag.group(value).rstrip())))
            for joined in _FLOW_ASSIGNMENT.finditer(self.text):
                if _credential_flag(joined.group("flag")):
                    start = joined.start("value")
                    self._add(0, (start, start + len(joined.group("value").rstrip())))
        return self.spans

    def _add(self, base: int, span: tuple[int, int] | None) -> None:
        """Redact ``span`` (relative to ``base``): unless it is one ``[REDACTED]`` already (a
        value redacted only in part by an earlier rule is redacted whole)."""
        if span is None or span[0] >= span[1]:
            return
        start, end = base + span[0], base + span[1]
        if start and self.text.startswith(REDACTED, start - 1) and \
                end <= start - 1 + len(REDACTED):
            return  # inside a [REDACTED] (read as a flow sequence)
        if self.text.startswith(REDACTED, start):
            rest = self.text[start + len(REDACTED):end]
            if not rest.strip("\"', ") or rest.startswith(" ("):
                return  # redacted already ("[REDACTED] (changed)": a note, not the value)
        self.spans.append((start, end))

    def _secret_value(self, kind: str, value: str) -> bool:
        """Whether a value in a data block is redacted: always in a Secret (and in stringData);
        when the kind is unknown (output cut before it), when it looks like base64."""
        if kind == "stringData" or self.secret_kind:
            return True
        if self.configmaps_only and kind != "binaryData":
            return False
        raw = value.strip().strip(",").strip("\"'")
        return len(raw) >= 4 and _BASE64_VALUE.fullmatch(raw) is not None

    def _flow(self, at: int, kind: str, level: int = 0) -> None:
        """A flow collection (``{a: b, c: d}``, ``["x", "y"]``, JSON) opening at ``at``, over
        as many lines as it takes (to the end of a cut output): its values are redacted by
        ``kind`` (``all``: everything inside it; ``nested``: the value of a credential key,
        every value but the scalars of keys that name no value, ``{user: bob, value: X}``, read
        so into collections ``_MAX_NESTED_FLOWS`` levels deep, ``level`` the one this is at;
        below that all)."""
        if at < self.flow_end:
            return
        text, depth, i = self.text, 0, at
        entry, colon = at + 1, 0
        while i < len(text):
            char = text[i]
            if char in "\"'" and (i == entry or text[i - 1] in " \t\n,:[{"):
                found = _QUOTED.match(text, i)
                assert found is not None
                i = found.end()
                continue
            if char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and char == ",":
                self._flow_entry(entry, colon, i, kind, level)
                entry, colon = i + 1, 0
            elif depth == 1 and char == ":" and not colon and (
                    i + 1 == len(text) or text[i + 1] in " \t\n\"'" or text[i - 1] in "\"'"):
                colon = i + 1
            i += 1
        self._flow_entry(entry, colon, i, kind, level)
        self.flow_end = i + 1

    def _flow_entry(self, start: int, colon: int, end: int, kind: str, level: int = 0) -> None:
        value_at = colon or start
        raw = self.text[value_at:end]
        lead = len(raw) - len(raw.lstrip())
        raw = raw.strip()
        if not raw or (kind in ("data", "binaryData") and not self._secret_value(kind, raw)):
            return
        if raw.strip("\"'").lower() in _NOT_SECRET_VALUES:
            return
        begin, finish = value_at + lead, value_at + lead + len(raw)
        if kind in _REFERENCES and colon and raw[0] not in "{[" and \
                _unquote(self.text[start:colon - 1].strip()) in _REFERENCES[kind]:
            return  # a reference's own field (``serviceAccountToken: {path: token}``)
        if kind == "nested":
            if raw[0] in "{[" and level < _MAX_NESTED_FLOWS:
                self._flow(begin, "nested", level + 1)
                return
            if colon and not any(c in raw for c in "[]{},") and not _nested_value(
                    _unquote(self.text[start:colon - 1].strip())):
                return  # a key that names no value (``user: bob``), its value one scalar
        if len(raw) >= 2 and raw[0] in "\"'" and raw[-1] == raw[0]:
            begin, finish = begin + 1, finish - 1
        self._add(0, (begin, finish))

    def _env_objects(self) -> None:
        """Environment entries as objects, all on one line (compact JSON, flow style): the
        value of the entry whose name names a credential, whatever the order."""
        for begin, end in _flat_objects(self.text):
            entry = self.text[begin:end]
            named = _ENV_NAME.search(entry)
            if named is None or not credential_name(named.group("name")):
                continue
            value = _OBJECT_VALUE.search(entry)
            if value is not None:
                group = next(g for g in ("dq", "sq", "plain") if value.group(g) is not None)
                start = value.start(group)
                raw = value.group(group).rstrip()
                if raw.lower() not in _NOT_SECRET_VALUES:
                    self._add(begin, (start, start + len(raw)))

    def _flows(self) -> None:
        """Flow mappings of a Secret's values (``data: {a: b}``, ``"stringData":{...}``, also
        with the key on a line of its own: ``? stringData`` / ``: {``), each read once."""
        self.flow_end = 0
        for opened in _FLOW_OPEN.finditer(self.text):
            if opened.end() > self.flow_end:
                self._flow(opened.end() - 1, opened.group("kind"))

    def _explicit(self, line: str, base: int, stripped: str) -> None:
        """YAML's explicit keys: ``? KEY`` on one line, ``: VALUE`` on the next."""
        if stripped.startswith(":") and self.explicit_key:
            value = _EXPLICIT_VALUE.match(line)
            if value is not None and not value.group("value").strip().startswith(("{", "[")):
                raw = value.group("value").rstrip().rstrip(",")
                self._add(base, (value.start("value"), value.start("value") + len(raw)))
                self.scalar_indent = len(line) - len(stripped)  # continued
            elif value is not None and value.group("value").lstrip().startswith("["):
                self._flow(base + value.start("value"), "all")  # a mapping's keys are read
        key = _EXPLICIT_KEY.match(line) if stripped.startswith("?") else None
        self.explicit_key = key is not None and credential_name(
            _unquote(key.group("key").strip().rstrip(",")))

    def _sequence_flag(self, line: str, base: int, stripped: str) -> None:
        """``- --token`` (or ``"--token",``) as one item, its value the next item; and
        ``- --token=VALUE`` with spaces in it."""
        if self.flag_pending and stripped:
            self.flag_pending = False
            item = _SEQUENCE_ITEM.match(line)
            if item is not None and item.group("value"):
                self._add(base, (item.start("value"), len(line.rstrip())))
                self.scalar_indent = len(line) - len(line.lstrip(" \t"))  # continued
                return
        flag = _SEQUENCE_FLAG.match(line)
        self.flag_pending = flag is not None and _credential_flag(flag.group("flag"))
        joined = _SEQUENCE_ASSIGNMENT.match(line) if "=" in line else None
        if joined is not None and (  # - --pw=two words, - DB_PASSWORD=a,b (docker's Env)
                _credential_flag(joined.group("flag")) if joined.group("flag")[0] == "-"
                else credential_name(joined.group("flag"))):
            self._add(base, (joined.start("value"), len(line.rstrip())))
            self.scalar_indent = len(line) - len(line.lstrip(" \t"))  # continued

    def _line(self, line: str, base: int) -> None:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" \t"))
        # a block scalar under a credential key: every more-indented line is its value
        if self.scalar_indent is not None:
            if stripped and indent <= self.scalar_indent:
                self.scalar_indent = None
            else:
                if stripped:
                    self._add(base, (indent, len(line.rstrip())))
                return
        if self.nested is not None and stripped and not stripped.startswith("#"):
            parent, items = self.nested
            if indent < parent or (indent == parent and not (
                    items and (stripped == "-" or stripped.startswith("- ")))):
                self.nested, self.nested_open = None, []
            else:
                self._json(line, base)
                self._nested_line(line, base, stripped, indent)
                return
        if self.described and self._described(line, base, stripped):
            return
        if self.key_pending is not None and stripped and not stripped.startswith("#") and \
                self._below_key(line, base, stripped, indent):
            return
        self._sequence_flag(line, base, stripped)
        if stripped.startswith(("?", ":")):
            self._explicit(line, base, stripped)
        self._json(line, base)
        if self._compact_json_secret(line, base):
            return
        match = _YAML_KEY.match(line)
        if self.block is not None and stripped and indent <= self.block[0] and not (
                match is None and stripped.startswith("- ") and indent == self.block[0]):
            self.block = None
        value, value_at = self._value(line, base, match)
        if self.block is not None and stripped and not stripped.startswith("#"):
            kind = self.block[1]
            if match is not None and value is not None:
                if value.startswith(("{", "[")):
                    self._flow(base + value_at, kind)
                elif self._secret_value(kind, value) or \
                        credential_name(_unquote(match.group("key").strip())):
                    if not _BLOCK_SCALAR.fullmatch(value.strip()):
                        self._add(base, _value_span(line, value_at))
                    self.scalar_indent = indent  # a block scalar, or a plain one continued
            elif match is not None and value is None and (
                    kind == "stringData" or self.secret_kind):
                pass  # a nested mapping: its own lines are read next
            elif match is not None and value is None and \
                    credential_name(_unquote(match.group("key").strip())):
                self.key_pending = indent  # a ConfigMap's ``password:``, its value below
                self.pending_key = _unquote(match.group("key").strip())
            elif self._secret_value(kind, stripped.lstrip("- ")):
                first = len(line) - len(line.lstrip(" -"))
                self._add(base, _value_span(line, first))
            return
        if match is None:
            self._env(line, base)
            return
        key = _unquote(match.group("key").strip())
        key_indent = indent + (len(match.group("dash")) if match.group("dash") else 0)
        if key in _DATA_KEYS and value is None:
            self.block = (key_indent, key)
            return
        if value is None and credential_name(key) and not _sentence_key(match) and (
                " " not in match.group("key").strip() or _DESCRIBED_KEY.fullmatch(key)):
            self.key_pending = key_indent  # ``password:``, its value on the lines below
            self.pending_key = key
        if value is not None and credential_name(key) and not _sentence_key(match):
            alias = _ALIAS.match(value)
            if alias is not None and alias.group("name") in self.anchors:
                self._add(0, self.anchors[alias.group("name")])
            elif value.startswith(("{", "[")):
                self._flow(base + value_at, key if key in _REFERENCES and
                           value.startswith("{") else "all")
            elif not _BLOCK_SCALAR.fullmatch(value.strip()):
                self._add(base, _value_span(line, value_at))
            if _BLOCK_SCALAR.fullmatch(value.strip()) or " " not in match.group("key").strip():
                self.scalar_indent = key_indent  # a block scalar, or a plain one continued
            return  # (a key with spaces is no YAML: a diff line, a log line)
        self._env(line, base)

    def _nested_line(self, line: str, base: int, stripped: str, indent: int) -> None:
        """A line nested, at any depth, under a credential key without a value (``password:``
        / ``  value: VALUE``, ``db_password:`` / ``  current:`` / ``    value: VALUE``): every
        value is redacted (also as a block scalar, a flow collection, a sequence item or on
        the lines below) but the scalar of a key that names no value (``secretName``,
        ``path``, ``user``) and the fields of a Kubernetes reference (:data:`_REFERENCES`:
        ``secretKeyRef:`` / ``  name: db``); any other child of a reference, and what is
        nested below a key that names no value (``valueFrom:`` / ``  x: VALUE``, ``items:`` /
        ``  - VALUE``), is a value."""
        opened = self.nested_open
        item = stripped == "-" or stripped.startswith("- ")
        while opened and (indent < opened[-1][0] or (indent == opened[-1][0] and not item)):
            opened.pop()
        reference = opened[-1][1] if opened else ""
        match = _YAML_KEY.match(line)
        if match is None:  # a plain scalar, a sequence item: a value
            first = len(line) - len(line.lstrip(" \t-"))
            if line.startswith(("{", "["), first):
                self._flow(base + first, "all")
            elif line[first:].rstrip().strip("\"',").lower() not in _NOT_SECRET_VALUES:
                self._add(base, (first, len(line.rstrip())))
            return
        key = _described(_unquote(match.group("key").strip()))
        key_indent = indent + (len(match.group("dash")) if match.group("dash") else 0)
        value, value_at = self._value(line, base, match)
        fields = _REFERENCES.get(reference, frozenset())
        if value is None:  # a mapping, a sequence or a value below: its lines are read next
            if reference != _NO_REFERENCE and key in _REFERENCES and (
                    not reference or key in fields):
                opened.append((key_indent, key))
            else:  # below a reference's other child, all is a value (no field kept)
                opened.append((key_indent, _NO_REFERENCE if reference else ""))
        elif value.startswith(("{", "[")):
            self._flow(base + value_at, "all")
        elif (key not in fields or key in _REFERENCES) if reference \
                else _nested_value(key) or key in _REFERENCES:
            if not _BLOCK_SCALAR.fullmatch(value.strip()):
                self._add(base, _value_span(line, value_at))
            self.scalar_indent = key_indent  # a block scalar, or a plain one continued

    def _below_key(self, line: str, base: int, stripped: str, indent: int) -> bool:
        """The lines below a credential key without a value (``password:``): a plain scalar
        (its value, over as many lines as it takes) and the scalar items of a sequence are
        redacted; a nested mapping or flow collection is read by the other rules. Whether
        the line was taken."""
        assert self.key_pending is not None
        if stripped == "----" and indent == self.key_pending:
            self.described, self.key_pending = True, None  # kubectl describe configmap
            return True
        item = stripped == "-" or stripped.startswith("- ")
        if (indent > self.key_pending or (item and indent == self.key_pending)) and \
                _YAML_KEY.match(line) is None and not stripped.lstrip("- ").startswith(
                    ("{", "[", "&", "*", "!", "|", ">")):
            first = len(line) - len(line.lstrip(" \t-"))
            self._add(base, (first, len(line.rstrip())))
            if not item:
                self.scalar_indent, self.key_pending = self.key_pending, None  # continued
            return True
        if (indent > self.key_pending or item) and _YAML_KEY.match(line) is not None and \
                _neutral_parent(self.pending_key):
            self.nested = (self.key_pending, indent == self.key_pending)  # ``  value: ...``
            # (a credential key that is a reference itself: ``serviceAccountToken:``)
            self.nested_open = [(self.key_pending, self.pending_key)] \
                if self.pending_key in _REFERENCES else []
            self.key_pending = None
            self._nested_line(line, base, stripped, indent)
            return True
        self.key_pending = None
        return False

    def _described(self, line: str, base: int, stripped: str) -> bool:
        """A value as ``kubectl describe configmap`` prints it (``DB_PASSWORD:``, ``----``,
        then the value over any number of lines, blank ones too): every line of it, up to the
        next key (a ``KEY:`` line above a ``----`` one) or the next section. Whether the line
        was taken."""
        following = self.lines[self.index + 1] if self.index + 1 < len(self.lines) else ""
        if line in ("BinaryData", "Events:") or line.startswith("Events:  ") or (
                stripped.endswith(":") and following.strip() == "----"):
            self.described = False
            return False
        if stripped:
            self._add(base, (len(line) - len(line.lstrip(" \t")), len(line.rstrip())))
        return True

    def _value(self, line: str, base: int, match: re.Match[str] | None
               ) -> tuple[str | None, int]:
        """A YAML key's value without its anchor or tag (None: none, a block opens) and where
        it starts; an anchored scalar is remembered for the aliases to it."""
        if match is None or match.group("value") is None:
            return None, len(line)
        value, value_at = match.group("value"), match.start("value")
        properties = _PROPERTIES.match(value)
        skip = properties.end() if properties is not None else 0
        anchor = _ANCHOR.match(value)
        value, value_at = value[skip:], value_at + skip
        if not value.strip():
            return None, value_at
        if anchor is not None and len(self.anchors) < 10000:
            span = _value_span(line, value_at)
            if span is not None:
                self.anchors[anchor.group("name")] = (base + span[0], base + span[1])
        return value, value_at

    def _env(self, line: str, base: int) -> None:
        """``name: DB_PASSWORD`` then, on this line or one of the next few, ``value: ...``
        (or the value first: ``- value: ...`` / ``name: DB_PASSWORD`` in the same entry)."""
        stripped = line.lstrip(" \t")
        if stripped.startswith(("-", "{", "}")) or (
                self.env_recent is not None and self.env_recent[2] <= 0):
            self.env_recent = None
        named = _ENV_NAME.search(line)
        if named is not None and credential_name(named.group("name")):
            self.env_pending = 4
            if self.env_recent is not None:
                self._add(0, self.env_recent[:2])
                self.env_recent = None
        elif self.env_pending == 0:
            recent = _ENV_VALUE.search(line)
            if recent is not None and named is None:
                raw, at = recent.group("value"), recent.start("value")
                cut = re.match(r'"(?:[^"\\]|\\.)*+"|\'(?:[^\']|\'\')*+\'|[^,}\]]*+', raw)
                length = _plain_length(raw, cut.group()) if cut else 0
                self.env_recent = (base + at, base + at + length, 3,
                                   len(line) - len(line.lstrip(" \t-")))
            elif self.env_recent is not None:
                start, end, left, indent = self.env_recent
                if stripped and len(line) - len(stripped) > indent:  # the value, continued
                    end = base + len(line.rstrip())
                else:
                    left -= 1
                self.env_recent = (start, end, left, indent)
        if self.env_pending:
            value = _ENV_VALUE.search(line)
            if value is not None:
                raw = value.group("value")
                at = value.start("value")
                if _BLOCK_SCALAR.fullmatch(raw.strip()):
                    self.scalar_indent = len(line) - len(line.lstrip(" "))
                    self.env_pending = 0
                    return
                quoted = re.match(r'"(?:[^"\\]|\\.)*+"?|\'(?:[^\']|\'\')*+\'?', raw)
                if quoted is not None:
                    closed = quoted.end() > 1 and quoted.group().endswith(raw[0])
                    self._add(base, (at + 1, at + quoted.end() - (1 if closed else 0)))
                else:  # plain, or inside a flow mapping: up to the next ',' or '}'
                    cut = re.match(r"[^,}\]]*+", raw)
                    length = _plain_length(raw, cut.group()) if cut else 0
                    if raw[:length].strip().lower() not in _NOT_SECRET_VALUES:
                        self._add(base, (at, at + length))
                if line.lstrip(" \t-").startswith(("value", '"value', "'value")):
                    self.scalar_indent = len(line) - len(line.lstrip(" \t-"))  # continued
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
                    string = _JSON_STRING.match(line, at)
                    assert string is not None
                    if _COLON.match(line, string.end()) is None:  # a value, not a key
                        self._add(base, (at + 1, string.end() - 1))
                        found = True
                    at = string.end()
                    continue
                depth += {"{": 1, "}": -1}.get(char, 0)
                at += 1
        return found


# ---------------------------------------------------------------------------------- text rules

_PEM = re.compile(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY[ A-Z]{0,20}-----"
                  r"(?:(?!-----END)[\s\S])*+"
                  r"(?:-----END[ A-Z0-9]{0,40}PRIVATE KEY[ A-Z]{0,20}-----)?")
_PEM_FAST = "PRIVATE KEY"
# other armoured keys (``-----BEGIN OpenVPN Static key V1-----``), never a public one
_KEY_BLOCK = re.compile(r"-----BEGIN (?![A-Za-z0-9 ]{0,40}?(?:PUBLIC|Public|public))"
                        r"[A-Za-z0-9 ]{0,40}?\b(?:[Kk][Ee][Yy])\b[A-Za-z0-9 ]{0,20}+-----"
                        r"(?:(?!-----END)[\s\S])*+(?:-----END[A-Za-z0-9 ]{0,64}+-----)?")
# A JWT (or the start of one cut off by the output bound): base64url JSON header "eyJ..."
# optionally followed by further dot-separated segments, and lines that continue it.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}+(?:\.[A-Za-z0-9_-]*+){0,4}+"
                     r"(?:\n[ \t]*+[A-Za-z0-9_.-]{8,}+(?=[ \t]*+(?:\n|$)))*+")
_AUTH_HEADER = re.compile(r"(?i)(\bauthorization[\"']?[ \t]*+[:=][ \t]*+[\"']?)"
                          r"(?!\[REDACTED\])([^\n\"']++)")
# (a credential ends at a string's escaped line break, tab or quote, ``Bearer X\nnext line``:
# a lowercase ``\n``, not ``\N``; also ``\\n``, a line break in a string inside a string, whose
# next line a rule reads once the escapes are decoded)
_BEARER_RE = re.compile(r"(?i)\b(bearer|token)([ \t]++)(?!\[REDACTED\])"
                        r"((?:[^\s\"',;\\]|\\(?-i:(?![nrt\"])))++)")
# the rest of the word a credential's escape ended (counted in :func:`_bearer`)
_BEARER_REST = re.compile(r"[^\s\"',;]*+")
_BASIC_RE = re.compile(r"(?i)\b(basic)([ \t]++)([A-Za-z0-9+/]{4,}+={0,2})")
# (a password may hold '/', '?', '#' or '@' unencoded, as generated ones do: it runs to the
# last '@' of the word, and when that '@' is in a path more is redacted, never less; a port
# followed by a path is no password: ``https://host:8443/?mail=a@b``)
_URL_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{0,30}+://)([^\s:/?#@\"'<>]*+):"
                           r"(?![0-9]{1,5}+[/?#])"
                           r"([^\s@\"'<>]++@(?:[^\s@\"'<>]*+@)*+)")
# what a match of it lies within: a run of characters but whitespace, quotes and angle brackets
_URL_WORD = re.compile(r"""[^\s"'<>]++""")
# a long user part alone is a token (``https://<token>@github.com``), not a user name
_URL_TOKEN_USER = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]{0,30}+://)([^\s:/?#@\"'<>]{20,}+)@")
_KEY_CHARS = r"[A-Za-z0-9_.-]"
# A key that may name a credential (``credential_name`` decides), then ':' or '=', then its
# value, quoted (whole, spaces included) or not. Linear time on any output: a key starts only
# where a key character does not precede it, the lookahead stays inside that one key, and the
# possessive quantifiers never backtrack.
# a word of an unquoted value: a quote in it ends it only where a closing one would, before
# a delimiter (``"password=abc", ...``), not inside (``password=ab"cd``)
_PLAIN_WORD = r"""(?:[^\s"',;}\]]|["'](?=[^\s"',;}\]]))++"""
_PAIR_WORDS = (r"token|passw|pass|pwd|pw|secret|key|auth|cred|cookie|session|dsn|pin|otp|sas|"
               r"sig|salt|hmac|connstr")
_KEYVALUE_RE = re.compile(
    rf"(?i)(?<!{_KEY_CHARS})(?={_KEY_CHARS}*?(?:{_PAIR_WORDS}))"
    rf"({_KEY_CHARS}++)([\"']?[ \t]*+(?:=>|[:=])[ \t]*+)"
    rf"(\"(?:[^\"\\\n]|\\.)*+\"?|'[^'\n]*+'?|{_PLAIN_WORD}"
    # an unquoted value goes on over the words after it (``password = two words``), up to
    # one that starts another pair or a flag (``user=bob``, ``-v``), a ``;`` or the line's end
    rf"(?:[ \t]++(?![{{\[]|{_KEY_CHARS}*+[:=]|-){_PLAIN_WORD})*+)"
)
# what a line holding a pair holds in a :data:`_FOLD` text (a pair's key holds one of these; a
# pair is on one line): the lines without one are not read for pairs (most of a long output)
_PAIR_HINT = re.compile(_trie(_PAIR_WORDS.split("|")))
_MAX_NESTED_PAIRS = 8
# (a value may be on the next line when the line is continued: ``-p \`` / ``  VALUE``; also
# after an ``=``, read before the credentials' values: :data:`_CONTINUED_FLAG`)
_FLAG_RE = re.compile(r"(?<!\S)(--?[A-Za-z][A-Za-z0-9_-]*+)(=|(?:[ \t]|\\\n)++)(?!-)"
                      r"(\"[^\"\n]*+\"?|'[^'\n]*+'?|\S++)")
_CONTINUED_FLAG = re.compile(r"(?<!\S)(--?[A-Za-z][A-Za-z0-9_-]*+)(=\\\n[ \t]*+)(?!-)"
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
    return any(_DECODED_SECRET.search(data) for data in base64_readings(run, least=16))


def _redact_encoded(text: str) -> str:
    spans = [m.span() for m in _B64_RUN.finditer(text) if _decodes_to_secret(m.group())]
    for match in _HEX_RUN.finditer(text):
        run = match.group()
        for skip in (0, 1):
            body = run[skip:]
            body = body[: len(body) - len(body) % 2]
            data = bytes.fromhex(body)
            if _DECODED_SECRET.search(data) or (len(data) >= 16 and _text_like(data)):
                spans.append(match.span())
                break
    for match in _PERCENT_WORD.finditer(text) if "%" in text else ():
        decoded = urllib.parse.unquote(match.group())
        if decoded != match.group() and (_DECODED_SECRET.search(decoded.encode("utf-8"))
                                          or (_KEYVALUE_RE.search(decoded) and
                                          _text_rules(decoded) != decoded)):
            spans.append(match.span())
    return _apply(text, spans)


# A standalone run of standard base64 (what kubectl prints of a Secret's data, whatever the
# structure around it: jsonpath, flow style, an anchor, a tab). JSON escapes (``\\u0022``,
# ``\\n``) are blanked first so they do not join a run.
_B64_TOKEN = re.compile(r"(?<![A-Za-z0-9+/])(?!REDACTED\])[A-Za-z0-9+/]{8,}+={0,2}+"
                        r"(?![A-Za-z0-9+/=])")  # (not a [REDACTED]: never one)
_JSON_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|.)")
# (and public keys: ``-----BEGIN PUBLIC KEY-----``, ``RSA PUBLIC KEY``, PGP's key block)
_CERTIFICATES = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}(?:CERTIFICATE|PUBLIC KEY(?: BLOCK)?)-----"
                           r"(?:(?!-----END)[\s\S])*+(?:-----END)?")
_ONLY_CERTIFICATES = re.compile(rb"(?:\s*+-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*+"
                                rb"-----END CERTIFICATE-----)++\s*+")
_SSH_PUBLIC_KEY = re.compile(r"(?:ssh|ecdsa|sk)-[a-z0-9@.-]{2,40}+ $")
_CLASS_CHANGE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                              "A" * 26 + "a" * 26 + "0" * 10 + "++")


def _text_like(data: bytes) -> bool:
    """Whether decoded bytes are text (what a password, a token or a config file is)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    ascii_chars = sum(1 for c in text if c.isascii())
    return ascii_chars * 4 >= len(text) * 3 and all(
        c.isprintable() or c in "\t\n\r" for c in text)


def _random_like(run: str) -> bool:
    """Whether a run looks like random bytes in base64 (a binary key): every character class
    and frequent changes between them (unlike an identifier such as ``V1beta1PodList``)."""
    classes = run.rstrip("=").translate(_CLASS_CHANGE)
    if len(classes) < 20 or not all(c in classes for c in "Aa0"):
        return False
    changes = sum(1 for a, b in itertools.pairwise(classes) if a != b)
    return changes * 20 >= (len(classes) - 1) * 9


# Identifiers that are valid base64 and decode to text by chance (about 1 in 300 runs of 8 hex
# digits does): a run of hex digits in one case (a UUID's parts, a container ID, a commit, a
# pod-template or controller-revision hash: a 32-bit number's decimal digits spelt in
# ``4-9bcdf``), and a run of lowercase letters and digits joined by a hyphen to more of a
# name (``web-ej3fmmdd``, a pod's ``-x2k4q``). Base64 of text almost never takes these shapes:
# of encoded passwords of 6 to 24 characters, 1 in 100,000 was all hex; a lowercase run
# standing alone is still read (in Kubernetes' whole generated-name alphabet, ``bcdfg...789``,
# base64 of a 6-letter password is about once in 300).
_HEX_IDENTIFIER = re.compile(r"[0-9a-f]++|[0-9A-F]++")
_NAME_PART = re.compile(r"[a-z0-9]++")
_NAME_CHAR = re.compile(r"[a-z0-9]")


def _identifier(run: str, before: str, after: str) -> bool:
    """Whether a run read as base64 is an identifier: see ``_HEX_IDENTIFIER``. ``before`` and
    ``after`` are the two characters on each side of it (``-w`` in ``web-ej3fmmdd``)."""
    if _HEX_IDENTIFIER.fullmatch(run):
        return True
    return _NAME_PART.fullmatch(run) is not None and any(
        len(side) == 2 and "-" in side and _NAME_CHAR.fullmatch(side.replace("-", "")) is not None
        for side in (before, after))


def _word_run(run: str) -> bool:
    """Whether a run (in whole quads) is too short for an encoded value, a ``[REDACTED]``'s
    word or a word (``bindings``): never read as one."""
    return run == "REDACTED" or len(run) < 8 or (
        run.isalpha() and (run.islower() or run[1:].islower()))


def _encoded_value(run: str, at_end: bool, in_certificate: bool) -> bool:
    """Whether a base64 run is an encoded value: text (``YWRtaW4=``), a key (DER, OpenSSH) or
    random bytes. Text is read only in whole quads (or at the end of a cut output); a line of
    wrapped base64 (70 characters in OpenSSH) only as a key or random bytes. In a certificate
    block (public, DER) only text is."""
    whole = len(run) % 4 == 0 or (at_end and "=" not in run)
    run = run[: len(run) - len(run) % 4] if "=" not in run else run
    if _word_run(run):
        return False
    try:
        data = base64.b64decode(run, validate=True)
    except (binascii.Error, ValueError):
        return False
    if _text_like(data):
        return whole and _ONLY_CERTIFICATES.fullmatch(data) is None  # certificates: public
    if in_certificate:
        return False
    return data.startswith((b"openssh-key-v1", b"0\x82", b"0\x81")) or _random_like(run)


# Base64 of 4 or 5 bytes standing alone: 6 characters and ``==`` or 7 and ``=`` (``cGFzcw==``
# "pass", ``YWRtaW4=`` "admin"); shorter is read as words are. An encoder writes the bits past
# the last byte as zeros, so its last character before the padding is one of 4 (before
# ``==``) or 16 (before ``=``) of the 64. Not a name in capitals with an empty
# value (``SERVICE=``, what ``env`` prints), nor the last line of wrapped base64 (a
# certificate's, a file's): that continues the line above; nor a checksum named so on its line
# before it (a CRC32C is 4 bytes: ``Hash (crc32c): n+mQ9A==``, ``"ChecksumCRC32": "..."``).
# Also in the URL-safe alphabet (``fn5-fg==``, ``~~~~``): of printable ASCII, only the fourth
# character can be one of the two it changes (``+/``, ``-_``), so only that one is looked for.
_SHORT_B64_TOKEN = re.compile(r"(?<![A-Za-z0-9+/])(?:[A-Za-z0-9+/]{5}[AQgw]==|"
                              r"[A-Za-z0-9+/]{6}[AEIMQUYcgkosw048]=)(?![A-Za-z0-9+/=])|"
                              r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9]{3}[_-](?:[A-Za-z0-9][AQgw]==|"
                              r"[A-Za-z0-9]{2}[AEIMQUYcgkosw048]=)(?![A-Za-z0-9+/=_-])")
_CAPITALS = re.compile(r"[A-Z]{7}=")
# a line of wrapped base64 is as wide as the encoder wraps: 64 (PEM, ``openssl base64``) or 76
# (MIME, ``base64``); a value printed on a line of its own above is no such line
_WRAPPED_ABOVE = re.compile(r"(?:^|\n)[ \t]{0,40}+(?:[A-Za-z0-9+/]{76}|[A-Za-z0-9+/]{64})"
                            r"[ \t]*+\n[ \t]*+$")
_WRAPPED_LOOK_BACK = 160
_CHECKSUM_NAME = re.compile(r"(?i)crc|checksum|hash|digest|etag|md5|sha[0-9]")
_SHORT_LOOK_BACK = 64  # how far back on its line a checksum's name is looked for
# padded base64 before it on its line: a name in it (``SHA0MA==``, ``Hp40``) names no checksum
_PADDED_RUN = re.compile(r"(?<![A-Za-z0-9+/_-])(?:[A-Za-z0-9+/_-]{4})++"
                         r"(?:[A-Za-z0-9+/_-]{3}=|[A-Za-z0-9+/_-]{2}==)(?![A-Za-z0-9+/=_-])")


def _short_encoded_text(text: str, match: re.Match[str]) -> bool:
    """Whether a short padded run (``_SHORT_B64_TOKEN``) is encoded text: printable ASCII, not
    a name in capitals, not the end of wrapped base64, not a checksum named so."""
    run, start = match.group(), match.start()
    if _CAPITALS.fullmatch(run) or _WRAPPED_ABOVE.search(
            text, max(0, start - _WRAPPED_LOOK_BACK), start):
        return False
    line = max(text.rfind("\n", max(0, start - _SHORT_LOOK_BACK), start) + 1,
               start - _SHORT_LOOK_BACK)
    if _CHECKSUM_NAME.search(_PADDED_RUN.sub(lambda m: " " * len(m.group()), text[line:start])):
        return False
    data = base64.urlsafe_b64decode(run) if "-" in run or "_" in run else base64.b64decode(run)
    return data.isascii() and data.decode("ascii").isprintable()


def _redact_base64_values(text: str) -> str:
    """Base64 runs that decode to text, or to a key or random bytes outside certificates;
    never a public SSH key (``ssh-ed25519 AAAA...``)."""
    masked = _JSON_ESCAPE.sub(lambda m: " " * len(m.group()), text) if "\\" in text else text
    skip = [m.span() for m in _CERTIFICATES.finditer(masked)] \
        if "CERTIFICATE" in text or "PUBLIC KEY" in text else []
    end = len(masked.rstrip())
    spans, k = [], 0
    for match in _B64_TOKEN.finditer(masked):
        run = match.group()
        if "=" not in run and _word_run(run[: len(run) - len(run) % 4]):
            continue  # (the cheapest test first: most runs in long output are words)
        while k < len(skip) and skip[k][1] <= match.start():
            k += 1
        in_certificate = k < len(skip) and skip[k][0] <= match.start()
        if _SSH_PUBLIC_KEY.search(masked, max(0, match.start() - 48), match.start()):
            continue
        if _identifier(match.group(), masked[max(0, match.start() - 2):match.start()],
                       masked[match.end():match.end() + 2]):
            continue
        if _encoded_value(match.group(), match.end() >= end, in_certificate):
            spans.append(match.span())
    if "=" in masked:
        k = 0
        for match in _SHORT_B64_TOKEN.finditer(masked):
            while k < len(skip) and skip[k][1] <= match.start():
                k += 1
            if not (k < len(skip) and skip[k][0] <= match.start()) and \
                    _short_encoded_text(text, match):
                spans.append(match.span())
    return _apply(text, spans)


# Credentials recognised by their own shape, whatever the name next to them.
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_])(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}"    # AWS key ids
    r"|gh[pousr]_[A-Za-z0-9]{20,}+|github_pat_[A-Za-z0-9_]{20,}+"            # GitHub
    r"|gl[a-z]{1,6}-[A-Za-z0-9_-]{20,}+"                                     # GitLab
    r"|xox[abceoprs]-[A-Za-z0-9-]{8,}+|xapp-[A-Za-z0-9-]{8,}+"              # Slack
    r"|[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}+|whsec_[A-Za-z0-9]{16,}+"      # Stripe
    r"|AIza[A-Za-z0-9_-]{30,}+|ya29\.[A-Za-z0-9_-]{20,}+"                   # Google
    r"|npm_[A-Za-z0-9]{30,}+|pypi-[A-Za-z0-9_-]{30,}+"                       # registries
    r"|sk-[A-Za-z0-9_-]{20,}+"                                                # API keys
    r"|SG\.[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16,}+"                         # SendGrid
    r"|hv[sbr]\.[A-Za-z0-9_-]{20,}+|dop_v1_[a-f0-9]{40,}+"                  # Vault, DO
    r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}"                                   # Shopify
    r")|(?<=hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9/_-]++"
    r"|(?<=discord\.com/api/webhooks/)[0-9]++/[A-Za-z0-9_-]++")
# what each of them holds (its start, or the address before it), looked for first: most output
# holds none (a shape added above adds its start here)
_TOKEN_START = re.compile(_trie([
    "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA", "ABIA", "ACCA", "gh",
    "github_pat_", "gl", "xox", "xapp-", "k_live_", "k_test_", "whsec_", "AIza", "ya29.",
    "npm_", "pypi-", "sk-", "SG.", "hv", "dop_v1_", "shp", "hooks.slack.com/",
    "discord.com/api/webhooks/"]))
# ``curl -u user:PASSWORD`` (not ``docker run -u 1000:1000``, a user and a group id)
_USER_FLAG = re.compile(r"""(?<![^\s"'\[,])(?:-u|-U|--user|--proxy-user)(?:[ \t]++|=)["']?"""
                        r"""[^\s:"']*+:(?![0-9]++(?![^\s"',\]]))(?!\[REDACTED\])"""
                        r"""(?P<value>[^\s"',\]]++)""")
# ``mysql -uroot -pPASSWORD``: the password joined to ``-p`` (MySQL and MariaDB clients)
_MYSQL_LINE = re.compile(r"(?m)^[^\n]*?\b(?:mysql|mysqldump|mysqladmin|mariadb)[^\n]*+")
_JOINED_P = re.compile(r"""(?<![^\s"'\[,])-p(?![\s=]|\[REDACTED\])(?P<value>[^\s"',\]]++)""")


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
    rest = _BEARER_REST.match(match.string, match.end(3))  # (the word, not its escape's cut)
    if word == "token" and len(value) + len(rest.group() if rest else "") < 16:  # "token is"
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def _pairs(text: str, depth: int = 0) -> str:
    """Credential key/value pairs in ``text`` redacted; a value of a key that turns out not to
    name a credential is read again (``a=password=x``), at most ``_MAX_NESTED_PAIRS`` deep
    (deeper, the value is redacted whole: linear time, fail closed)."""

    def one(match: re.Match[str]) -> str:
        key, sep, value = match.group(1), match.group(2), match.group(3)
        if value.lstrip("\"'").startswith(_ALREADY) or value.startswith(">") or \
                value.strip("\"'").lower() in _NOT_SECRET_VALUES or \
                _SIZE_ONLY.match(match.string, match.start(3)) or \
                _PLACEHOLDER.match(match.string, match.start(3)) or \
                _message_pair(match.string, match.start(1), key, sep, value):
            return match.group(0)
        # (a reference's mapping, ``serviceAccountToken: {path: token}``: its pairs read)
        if not credential_name(key) or (value[:1] == "{" and key in _REFERENCES):
            if not any(c in value for c in ":="):
                return match.group(0)
            if depth >= _MAX_NESTED_PAIRS:
                return f"{key}{sep}{REDACTED}"
            return f"{key}{sep}{_pairs(value, depth + 1)}"
        if value[:1] in "\"'":
            closing = value[0] if len(value) > 1 and value.endswith(value[0]) else ""
            return f"{key}{sep}{value[0]}{REDACTED}{closing}"
        return f"{key}{sep}{REDACTED}"

    return _sub_lines(_KEYVALUE_RE, one, text, _PAIR_HINT)


def _sub_lines(pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str,
               hint: re.Pattern[str]) -> str:
    """``pattern.sub(repl, text)`` for a ``pattern`` whose every match lies on one line and
    holds what ``hint`` finds in the text :data:`_FOLD`-ed: read only on the lines that hold
    it, each run of such lines at once (the same result: a line's start is where a match may
    start, as the text's is)."""
    out: list[str] = []
    last = 0
    folded = text.translate(_FOLD)
    found = hint.search(folded)
    while found is not None:
        start = text.rfind("\n", 0, found.start()) + 1
        end = text.find("\n", found.end())
        while end != -1:  # (and the lines below that hold it too)
            found = hint.search(folded, end + 1)
            if found is None or text.find("\n", end + 1, found.start()) != -1:
                break
            end = text.find("\n", found.end())
        else:
            found, end = None, len(text)
        out += [text[last:start], pattern.sub(repl, text[start:end])]
        last = end
    return "".join([*out, text[last:]]) if out else text


# a sentence's words after a colon (``msg="auth: login ok, session created"``): lowercase
# words, each a word a message says of a state (:data:`_PROSE_WORDS`, :func:`_participle`),
# one of them more than the words any sentence holds (a passphrase's ``to be or not to be``
# is a value); never after a word naming what a person types (``temporary password: red
# dragon``, ``Password:red dragon``: a passphrase's words are any words)
_WORDS = re.compile(r"[a-z]++(?:[ \t]++[a-z]++)++")
_FUNCTION_WORDS = frozenset({
    "not", "no", "is", "was", "are", "were", "has", "had", "have", "will", "must", "can",
    "cannot", "should", "may", "does", "did", "for", "of", "to", "the", "a", "an", "in", "on",
    "at", "by", "with", "from", "and", "or", "as", "now", "again", "already", "yet", "still",
    "too"})
_TYPED_NAME = re.compile(r"(?i)pass|pwd|secret|key|phrase|pin|otp|salt|cred|word")


def _message_pair(text: str, key: int, name: str, sep: str, value: str) -> bool:
    """Whether the key ``name`` at ``key`` and its ``value`` are a message's words, not a
    credential's name and value: an event's quoted name (:func:`_event_name`), or a sentence
    after a colon (:data:`_WORDS`; ``password=a b`` assigns a passphrase)."""
    if key >= 1 and sep[:1] in "\"'" and text[key - 1] == sep[:1]:
        line = text.rfind("\n", max(0, key - 256), key)  # (the word before: a bounded look)
        return _event_name(text, line + 1 if line != -1 else max(0, key - 256),
                           key + len(name) + 1, sep[1:], value)
    if sep.strip(" \t\"'") != ":" or _WORDS.fullmatch(value) is None or \
            _TYPED_NAME.search(name) is not None:
        return False
    words = value.split()
    return all(w in _PROSE_WORDS or _participle(w) for w in words) and \
        any(w not in _FUNCTION_WORDS for w in words)


# A value a pair rule redacted up to a ``,``, ``}`` or ``]`` it took for the end of a flow
# collection's entry (``password=Ab1,Cd2}Ef3``): what follows it, up to a space, a ``;``, a
# quote, a ``,`` that starts another pair (:data:`_NEXT_KEY`) or, after a ``?`` (a URL's
# query), an ``&``
_CUT_VALUE = re.compile(r"\[REDACTED\](?=[,}\]][^\s;\"'])")
_CUT_REST = re.compile(r"(?:[}\]]|,(?![A-Za-z0-9_.\-]++[ \t]*+[:=])|[^\s;,}\]\"'])++")
_CUT_REST_IN_URL = re.compile(r"(?:[}\]]|,(?![A-Za-z0-9_.\-]++[ \t]*+[:=])|[^\s;&,}\]\"'])++")
_KEY_BEFORE = re.compile(rf"({_KEY_CHARS}++)[\"']?[ \t]*+(?:=>|[:=])[ \t]*+$")
# a ``,`` then a key: where such a rest stops, another pair starts only when that key is
# written as the credential's own, with its separator and in its case (``password=a,mode=b``),
# not in another one (``password=Ab1,Cd:ef``, ``password=Ab1,Cd=ef``: the value's own)
_NEXT_KEY = re.compile(rf",({_KEY_CHARS}++)[ \t]*+([:=])")


def _continue_cut_values(text: str) -> str:
    """A credential's unquoted value redacted only up to a ``,``, ``}`` or ``]``, where no
    bracket is open on its line before its key (so the character is the value's own, as
    generated passwords hold them): the rest of the value redacted too. Brackets are counted
    as written, in quoted strings too (such a line's value stays cut: fail open as before)."""
    if "[REDACTED]," not in text and "[REDACTED]}" not in text and "[REDACTED]]" not in text:
        return text
    out: list[str] = []
    for line in text.split("\n"):
        if _CUT_VALUE.search(line) is None:
            out.append(line)
            continue
        balance, depth = [0], 0  # flow collections open before each position
        for char in line:
            depth += 1 if char in "{[" else -1 if char in "}]" else 0
            balance.append(depth)
        pieces, at = [], 0
        for cut in _CUT_VALUE.finditer(line):
            if cut.start() < at:
                continue
            key = _KEY_BEFORE.search(line, max(0, cut.start() - 260), cut.start())
            if key is None or balance[key.start()] > 0 or not credential_name(key.group(1)):
                continue
            # read only now: a rest taken runs to where the next cut is looked for (linear)
            end = _rest_end(line, cut.end(), key, "?" in line[max(0, key.start() - 2048):
                                                              key.start()])
            if end == cut.end():
                continue
            pieces += [line[at:cut.end()]]
            at = end
        out.append("".join(pieces) + line[at:])
    return "\n".join(out)


def _rest_end(line: str, at: int, key: re.Match[str], in_url: bool) -> int:
    """Where the rest of a cut value at ``at`` ends (:data:`_CUT_REST`), past each ``,`` the
    key after which is written otherwise than the credential's ``key`` (:data:`_NEXT_KEY`)."""
    own = key.group(1)
    separator = "=" if "=" in key.group()[len(own):] else ":"
    pattern = _CUT_REST_IN_URL if in_url else _CUT_REST
    while True:
        rest = pattern.match(line, at)
        at = rest.end() if rest else at
        following = _NEXT_KEY.match(line, at)
        if following is None:
            return at
        name = following.group(1)
        if following.group(2) == separator and (name.islower() if own.islower() else
                                                name.isupper() if own.isupper() else True):
            return at
        at += 1


def _credential_flag(flag: str) -> bool:
    """``--db-password``; also one dash before a long name, as Go's flag package and Java's
    tools write them (``-password``, ``-api-key``, ``-storepass``), not short flags (``-a``)."""
    return flag in _PASSWORD_FLAGS or (flag.startswith("--") and credential_name(flag[2:])) \
        or (flag.startswith("-") and len(flag) > 3 and credential_name(flag[1:]))


# Tools whose own flags take a password or key, though the same letters mean other things
# elsewhere (``ssh -P`` is a port, ``ls -a`` all): read only after the tool's name (any case,
# ``.exe`` too), on its command line (to the line's end, a ``;``, ``|``, ``&`` or a
# redirection), or as the items of an argument list (``["redis-cli", "-a", "VALUE"]``).
_TOOL_FLAGS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("redis-cli", "valkey-cli", "keydb-cli"), frozenset({"-a"})),
    **dict.fromkeys(("sqlcmd", "bcp", "osql", "isql"), frozenset({"-P", "/P"})),
    **dict.fromkeys(("ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapwhoami",
                     "ldapcompare", "ldapmodrdn", "ldapexop"), frozenset({"-w"})),
    "ldappasswd": frozenset({"-w", "-a", "-s"}),  # (its -s is the new password, not a scope)
    **dict.fromkeys(("zip", "unzip", "zipcloak"), frozenset({"-P"})),
    "openssl": frozenset({"-k", "-pass", "-passin", "-passout"}),
    "ipmitool": frozenset({"-P", "-k", "-y"}),
    **dict.fromkeys(("snmpwalk", "snmpget", "snmpset", "snmpbulkwalk", "snmpgetnext",
                     "snmptrap", "snmpbulkget", "snmptable"), frozenset({"-A", "-X", "-c"})),
    **dict.fromkeys(("mosquitto_pub", "mosquitto_sub", "mosquitto_rr"), frozenset({"-P"})),
    "rdesktop": frozenset({"-p"}),
    "influx": frozenset({"-password", "-t"}),
}
# The tools above that read a short flag's value joined to it (``-wVALUE``), as getopt does
# (not openssl's nor influx's one-dash long options: ``-key``, ``-type``)
_GETOPT_TOOLS = frozenset(_TOOL_FLAGS) - {"openssl", "influx"}
# ... and where the password is part of another value: ``-U user%PASSWORD`` (Samba),
# ``-u user,PASSWORD`` (lftp)
_TOOL_JOINED: dict[str, tuple[frozenset[str], str]] = {
    **dict.fromkeys(("smbclient", "rpcclient", "smbcacls", "smbget", "net"),
                    (frozenset({"-U", "--user"}), "%")),
    "lftp": (frozenset({"-u"}), ","),
}
# ... or only joined to its flag: ``mysql -pPASSWORD`` (after a bare ``-p`` the client prompts
# for the password, and the next word is the database's name)
_JOINED_ONLY: dict[str, frozenset[str]] = dict.fromkeys(
    ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mariadb",
     "mariadb-dump", "mariadb-admin"), frozenset({"-p"}))
# ... or a positional argument: ``sqlplus user/PASSWORD@db`` (``sql``, ``exp`` and ``imp``,
# also words, only with the ``@``), ``htpasswd -b FILE USER PASSWORD``, ``rabbitmqctl add_user
# USER PASSWORD``, ``vault login TOKEN``, ``net user NAME PASSWORD``, ``net use Z: \\srv\share
# PASSWORD``
_ORACLE_TOOLS = frozenset({"sqlplus", "rman", "expdp", "impdp", "exp", "imp", "sqlldr",
                           "dgmgrl", "sql"})
_ORACLE_WORDS = frozenset({"sql", "exp", "imp"})
_TOOLS = frozenset({*_TOOL_FLAGS, *_TOOL_JOINED, *_JOINED_ONLY, *_ORACLE_TOOLS, "htpasswd",
                    "rabbitmqctl", "vault", "net", "xfreerdp"})
_TOOL_NAMES = _trie(_TOOLS)
# a tool's name in any case where a command starts, looked for in a :data:`_FOLD`-ed text (as
# a case-insensitive pattern would find it, far faster); and any of its names there at all
# (no text without one names a tool: not one of its command lines, lists or sequences is read)
_TOOL_COMMAND = re.compile(r"""(?<![^\s;|&(`"'\[])(?:[\w.-]*+[/\\])*+(?P<tool>""" +
                           _TOOL_NAMES + r""")(?:\.exe)?+(?![\w.-])""")
_TOOL_NAMED = re.compile(_TOOL_NAMES)
# (``;``, ``|`` and ``&`` end a command only beside a space or another of them: ``ps``
# prints a password's ``a&b`` as it was given, in one word)
_SHELL_WORD = re.compile(r"""[0-9]*+[<>]|(?:"(?:[^"\\\n]|\\.)*+"?|'[^'\n]*+'?|\\.|"""
                         r"""[^\s"'\\;|&<>]|[;|&](?=[^\s;|&<>]))++|[;|&\n]""")
_COMMAND_ENDS = frozenset(";|&\n")
# a quote, then closing brackets or commas, then the word's end, the next string or a plain
# item of a flow sequence: the end of the JSON or YAML string a command line is written in
# (``"redis-cli -a VALUE"]}``, ``"... VALUE", "b"]``, ``['... VALUE', b]``), when a quote of
# its kind opens that string before the word on its line and the word's own quoting holds it
# not (``'Zq7"}Wv9'``, ``ps``'s ``Zq7",Wv9``)
_STRING_END = re.compile(r"""(?<!\\)["'][ \t]*+[\]},](?:[ \t]*+[\]},:])*+[ \t]*+"""
                         r"""(?:["']|\Z|[^\s"',\[\]{}][^"',\[\]{}\n]*+[\]},])""")
# a quoted part of a word (what a shell reads as one): a quote inside it is the value's own
_QUOTE = re.compile(r"[\"']")
_WORD_QUOTED = re.compile(r"""(?<!\\)(?:"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+')""")
_RABBIT_PASSWORDS = frozenset({"add_user", "change_password", "authenticate_user"})
_RABBIT_OPTIONS = frozenset({"-n", "--node", "-t", "--timeout", "-l", "--longnames"})
# a placeholder or a reference, not a value: a short lowercase word (help text, ``redis-cli
# -a is deprecated``), ``<password>``, ``[options]``, ``$PASSWORD``, ``$(cat file)``; the comma
# after a flow sequence's flag (``[redis-cli, -a, X]`` read as a command line)
_NO_VALUE = re.compile(r"""["']?(?:[a-z]{1,3}+|<[^>]*+>|\[[^\]]*+\]|\{[^}]*+\}|\$.*+|,)["']?""",
                       re.DOTALL)
# Commands that read a secret on their input (a pipeline's part, up to a ``;`` or ``&``): each
# row's patterns all found in it. What they are given is redacted (:func:`_stdin_secrets`):
# what ``echo`` or ``printf`` starts their pipeline with (``echo VALUE | tee f | docker login
# --password-stdin``), a here-string (``<<< VALUE``) and a here-document's lines (up to its
# end marker) given to them or to a command of their pipeline before them (``cat <<< VALUE |``)
_INPUT_FILE = r"(?:[\w.-]*+=)?+(?:-|/dev/stdin|(?i:stdin)|fd:0)(?![^\s;&|])"
_STDIN_PASSWORD: tuple[tuple[re.Pattern[str], ...], ...] = tuple(
    tuple(re.compile(pattern) for pattern in row) for row in (
        (r"--password-stdin\b",),  # docker, podman, helm registry, skopeo, crane login
        (r"\bchpasswd\b",),  # ``user:PASSWORD`` lines
        (r"\bpasswd\b", r"--stdin\b"),
        (r"\bsudo\b", r"(?<!\S)(?:-[A-Za-z]*S|--stdin)\b"),  # the user's password
        (r"--with-token\b",),  # gh auth login
        (r"\bgh\b", r"\bsecret[ \t]++set\b"),  # the secret's value (no ``--body`` given)
        (r"--passphrase-fd[= ]0\b",),  # gpg
        (r"\bhtpasswd\b", r"(?<!\S)-[A-Za-z]*i"),  # htpasswd -i: the password
        # ``-`` for the input, vault's and docker's secret commands named (not a namespace's
        # or a file's name): ``vault login -``, ``vault kv put PATH password=-``, ``docker
        # secret create NAME -``
        (r"(?<![^\s;&|(/])vault[ \t]++(?:login|write|kv|unwrap|token|auth|operator)\b",
         # (``password=-`` is redacted as a credential's value before these rules run)
         r"(?:(?<!\S)|=)(?:-|\[REDACTED\])(?![^\s;&|])"),
        (r"(?<![\w.-])secret[ \t]++create\b", r"(?<!\S)-(?![^\s;&|])"),
        # a file of the input, for a flag naming a credential (``--key-file=-``, ``openssl
        # -passin stdin``) or a Secret created (``kubectl create secret generic s
        # --from-file=k=/dev/stdin``): not any ``-f -`` (``kubectl -n vault apply -f -``)
        (r"(?<!\S)--?(?=[\w-]*?(?i:pass|token|key|secret|cred))[\w-]++[= ]" + _INPUT_FILE,),
        (r"(?<![\w.-])create[ \t]++secret\b", r"(?<!\S)--?[\w-]++[= ]" + _INPUT_FILE),
    ))
# what ``echo`` or ``printf`` prints, to the end of its command (past ``--`` and a format
# that prints its argument alone, ``%s``, quoted or not)
_ECHOED = re.compile(r"""(?:^|[;&("'`]|\s)(?:echo|printf)(?:[ \t]++-[neE]++)*+[ \t]++"""
                     r"""(?:(?:--|"%s(?:\\n)?"|'%s(?:\\n)?'|%s(?:\\n)?)[ \t]++)*+"""
                     r"""(?P<value>[^\n]*+)\Z""")
# what ``echo`` prints of its words: up to a redirection (``>``, ``2>``, ``&>``) outside quotes
_PRINTED = re.compile(r"""(?:"(?:[^"\\\n]|\\.)*+"?|'[^'\n]*+'?|\\.|[^"'\\\s>]|"""
                      r"""\s++(?![0-9&]?+>))*+""")
_LINE = re.compile(r"[^\n]++")  # (a line with something on it)
_BAR = re.compile(r"\|")
# where a command ends (``;``, ``&``: not inside a word, as in :data:`_SHELL_WORD`, nor the
# ``|&`` that pipes the error output too), and a pipeline (also ``||``); a pipeline writing
# a file another command may read; a pipe at a line's end (the pipeline goes on below)
_COMMAND_END = re.compile(r"(?<!\|)[;&](?![^\s;|&<>])")
_PIPELINE_END = re.compile(r"\|\||(?<!\|)[;&](?![^\s;|&<>])")
_PIPE_BREAK = re.compile(r"\|[ \t]*+\n")
_WRITES = re.compile(r"(?<![0-9&<>])>|\btee\b")
# a here-string's word (``<<< VALUE``, ``<<<"VALUE"``), and a here-document's start and its
# end marker (``<<EOF``, ``<<-'EOF'``)
_HERE_STRING = re.compile(r"""<<<[ \t]*+(?P<word>"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+'|"""
                          r"""(?:[^\s"'\\;|&<>]|\\.|[;|&](?=[^\s;|&<>]))++)""")
_HERE_DOCUMENT = re.compile(r"""(?<!<)<<-?+[ \t]*+(?P<q>["']?+)(?P<marker>[A-Za-z0-9_.-]++)"""
                            r"""(?P=q)""")
# how many lines below a here-document's start its end marker is looked for; without one
# there, only the first line (the one a password reader reads) is redacted
_HERE_LINES = 64
# ``kubectl describe pod``'s container command and arguments, one a line below ``Command:``
# and ``Args:`` (the arguments read on from the command when ``Args:`` follows it)
_DESCRIBED_LIST = re.compile(r"^(?P<indent>[ \t]*+)(?P<kind>Command|Args):[ \t]*+(?=\n)",
                             re.MULTILINE)
_DESCRIBED_ITEM = re.compile(r"\n(?:[ \t]*+\n)*+(?P<indent>[ \t]*+)(?P<item>\S[^\n]*+)")
# the flag read in a list whose command names no tool of :data:`_TOOLS` (``Args:`` alone, the
# command the image's: ``redis-server``'s ``-a VALUE`` through an entrypoint script)
_UNNAMED_TOOL_FLAGS = frozenset({"-a"})
# a YAML sequence's item on a line of its own (``command:`` / ``- redis-cli`` / ``- -a``)
_TOOL_SEQUENCE_ITEM = re.compile(r"""^(?P<indent>[ \t]*+)-[ \t]++(?P<item>"(?:[^"\\\n]|\\.)*+"|"""
                                 r"""'[^'\n]*+'|[^\s#][^\n#]*+)""", re.MULTILINE)
# an argument list whose first item may name a tool, and its items: JSON's strings, or a YAML
# flow sequence's quoted or plain ones (``[redis-cli, -a, X]``; a plain one holds no quote);
# one to a line or not (``kubectl get pod -o json`` prints a container's ``command`` so)
_ARGUMENT_LIST = re.compile(r'\[\s*+(?!REDACTED\])(?=[^\s,\[\]{}])')  # (not a value redacted)
_LIST_ITEM = re.compile(r"""\s*+(?P<item>"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+'|"""
                        r"""(?:[^\s,\[\]{}"']|[ \t]++(?=[^\s,\[\]{}"']))++)"""
                        r"""\s*+(?P<next>[,\]])""")


class _Word:
    """A word of a command line at its place in the text (what :func:`_tool_spans` reads)."""

    def __init__(self, string: str, start: int, end: int) -> None:
        self.string, self._start, self._end = string, start, end

    def group(self) -> str:
        return self.string[self._start:self._end]

    def start(self) -> int:
        return self._start

    def end(self) -> int:
        return self._end


def _tool_arguments(text: str) -> str:
    """The passwords the tools of :data:`_TOOLS` take by their own flags or positions, and
    what a command that reads its password from its input is given; a line continued by a
    backslash read as one with the next (the same length: the spans are the text's)."""
    spans: list[tuple[int, int]] = []
    whole, text = text, text.replace("\\\n", "  ")
    folded = text.translate(_FOLD)
    named = _TOOL_NAMED.search(folded) is not None
    read = 0  # (a tool's name inside the command line read last was read with it)
    for command in _TOOL_COMMAND.finditer(folded) if named else ():
        if command.start() < read:
            continue
        found, read = _command_spans(text, text[command.start("tool"):command.end("tool")],
                                     command.end())
        spans += found
    if "[" in text and named:
        for opened in _ARGUMENT_LIST.finditer(text):
            items: list[_Word] = []
            item = _LIST_ITEM.match(text, opened.end())  # (each item where the last ended)
            if item is None or _tool_name(text[slice(*_unquoted(text, *item.span("item")))]) \
                    not in _TOOLS:
                continue  # (read on only when its first item names a tool: most name none)
            while item is not None:
                items.append(_Word(text, *_unquoted(text, *item.span("item"))))
                if item.group("next") == "]":
                    break
                item = _LIST_ITEM.match(text, item.end())
            # (``['net', 'user', 'bob', 'admin']`` is the command line that sets bob's password:
            # a container's ``command`` as ``-o json`` prints it)
            spans += _tool_spans(_tool_name(items[0].group()), items[1:])
    if "- " in text and named:
        spans += _tool_sequences(text)
    if "Command:" in text or "Args:" in text:
        spans += _described_arguments(text)
    if "|" in text or "<<" in text:
        spans += _stdin_secrets(_PIPE_BREAK.sub(lambda m: m.group().replace("\n", " "), text))
    return _apply(whole, [s for s in spans if not whole.startswith(_ALREADY, s[0])])


def _command_spans(text: str, tool: str, start: int) -> tuple[list[tuple[int, int]], int]:
    """:func:`_tool_spans` of a tool's command line (``tool``'s name, its words from
    ``start``), and where it ends (:data:`_COMMAND_ENDS`, a redirection): all its words read as
    the tool's, and each tool's name among them (a host's, a file's or a database's name, or
    a tool the first one runs) read as another's up to the next such name."""
    lines: list[tuple[str, list[_Word]]] = [(_tool_name(tool), [])]
    words: list[_Word] = []
    end = len(text)
    for word in _SHELL_WORD.finditer(text, start):
        if word.group() in _COMMAND_ENDS or word.group()[-1:] in "<>":
            end = word.start()
            break
        if _tool_name(word.group()) in _TOOLS:
            lines.append((_tool_name(word.group()), []))
        else:
            lines[-1][1].append(_Word(text, word.start(), word.end()))
        words.append(_Word(text, word.start(), word.end()))
    spans = _tool_spans(lines[0][0], words)
    for tool, own in lines[1:]:
        spans += _tool_spans(tool, own)
    return spans, end


def _described_arguments(text: str) -> list[tuple[int, int]]:
    """:func:`_argument_spans` of each container's command and arguments as ``kubectl
    describe`` prints them, one a line (:data:`_DESCRIBED_LIST`)."""
    spans: list[tuple[int, int]] = []
    words: list[_Word] = []
    indent, end = "", -1
    for header in _DESCRIBED_LIST.finditer(text):
        if header.start() < end:
            continue  # (an argument of the list read last)
        if header.group("kind") == "Command" or header.start() != end + 1 or \
                header.group("indent") != indent:
            spans += _argument_spans(words)
            words = []
        indent, end = header.group("indent"), header.end()
        while (item := _DESCRIBED_ITEM.match(text, end)) is not None and \
                len(item.group("indent").expandtabs()) > len(indent.expandtabs()):
            stop = item.start("item") + len(item.group("item").rstrip())
            words.append(_Word(text, item.start("item"), stop))
            end = item.end()
    return spans + _argument_spans(words)


def _argument_spans(words: list[_Word]) -> list[tuple[int, int]]:
    """The spans of a command's ``words`` read one a line: a tool's own (:func:`_tool_spans`),
    and the word after a flag naming a credential (``--password`` / ``VALUE``), or after one
    of :data:`_UNNAMED_TOOL_FLAGS` when no tool is named."""
    named = bool(words) and _tool_name(words[0].group()) in _TOOLS
    spans = _tool_spans(_tool_name(words[0].group()), words[1:]) if named else []
    for word, following in itertools.pairwise(words):
        if (_credential_flag(word.group()) or (
                not named and word.group() in _UNNAMED_TOOL_FLAGS)) and \
                not following.group().startswith("-"):
            spans += _value(following)
    return spans


def _stdin_secrets(text: str) -> list[tuple[int, int]]:
    """The spans of what a command of :data:`_STDIN_PASSWORD` is given on its input, line by
    line (a pipeline's parts split at each ``|``; an empty one, of ``||``, ends it)."""
    spans: list[tuple[int, int]] = []
    lines = list(_LINE.finditer(text))
    numbers: dict[str, list[int]] = {}  # (the lines holding each end marker: at the first)
    below = 0  # (the first line that is a command again: a here-document's are not)
    for number, line in enumerate(lines):
        if number < below or ("|" not in line.group() and "<<" not in line.group()):
            continue
        readers = [row for row in _STDIN_PASSWORD if all(p.search(line.group()) for p in row)]
        if not readers:
            continue
        bars = [bar.start() for bar in _BAR.finditer(text, line.start(), line.end())]
        parts = list(zip([line.start(), *(bar + 1 for bar in bars)], [*bars, line.end()],
                         strict=True))
        fed = -1  # (the last part read)
        # (of the here-documents given to a reader on this line, by where they start: each
        # command's, ``cat <<A <<B``, in the order their lines follow the command line)
        markers: dict[int, str] = {}
        for at, (start, end) in enumerate(parts):
            stop = _COMMAND_END.search(text, start, end)
            command = text[start:end if stop is None else stop.start()]
            if not command.strip() or not any(all(p.search(command) for p in row)
                                              for row in readers):
                continue
            feeds = [(start, start + len(command), False)]
            if at > fed + 1:
                feeds += _feeds(text, parts[fed + 1][0], start)
            fed = at
            for first, last, echo in feeds:
                spans += _fed(text, first, last, echo)
                for document in _HERE_DOCUMENT.finditer(text, first, last):
                    markers[document.start()] = document["marker"]
        if markers:
            numbers = numbers or _line_numbers(lines)
            found, below = _here_documents(lines, numbers, number + 1,
                                           [markers[at] for at in sorted(markers)])
            spans += found
    return spans


def _feeds(text: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """The commands of ``text[start:end]``, before a password reader on its line, that give
    it something: the parts of its own pipeline, and those of the pipelines before it that
    write a file (:data:`_WRITES`: ``echo VALUE > f; cat f | docker login ...``)."""
    feeds: list[tuple[int, int, bool]] = []
    ends = [*_PIPELINE_END.finditer(text, start, end)]
    for at, (first, last) in enumerate(zip([start, *(m.end() for m in ends)],
                                           [*(m.start() for m in ends), end], strict=True)):
        if at == len(ends) or _WRITES.search(text, first, last) is not None:
            bars = [bar.start() for bar in _BAR.finditer(text, first, last)]
            feeds += zip([first, *(bar + 1 for bar in bars)], [*bars, last],
                         itertools.repeat(True))
    return feeds


def _fed(text: str, start: int, end: int, echo: bool) -> list[tuple[int, int]]:
    """The spans of what the command ``text[start:end]`` gives a password reader on its line:
    what ``echo`` or ``printf`` prints (when ``echo``), a here-string."""
    spans: list[tuple[int, int]] = []
    echoed = _ECHOED.search(text[start:end]) if echo else None
    if echoed is not None:
        at = start + echoed.start("value")
        # (up to a redirection: ``echo VALUE > /tmp/p``'s file is no part of it; but when
        # nothing is printed before it, the ``>`` is more likely a continued line's prompt,
        # ``echo \``, ``> VALUE | ...``, than an echo of nothing: all of it, fail closed)
        printed = _PRINTED.match(echoed.group("value"))
        value = printed.group() if printed is not None and \
            _ALNUM.search(printed.group()) is not None else echoed.group("value")
        spans += _value(_Word(text, at, at + len(value.rstrip())))
    for here in _HERE_STRING.finditer(text, start, end):
        spans += _value(_Word(text, here.start("word"), here.end("word")))
    return spans


def _line_numbers(lines: list[re.Match[str]]) -> dict[str, list[int]]:
    """The numbers of the lines holding each text (without the spaces around it)."""
    numbers: dict[str, list[int]] = {}
    for number, line in enumerate(lines):
        numbers.setdefault(line.group().strip(), []).append(number)
    return numbers


def _here_end(numbers: dict[str, list[int]], first: int, marker: str) -> tuple[int, bool]:
    """The number of the line ending a here-document whose lines start at line ``first`` (its
    ``marker`` there, :data:`_HERE_LINES`), or of the line below ``first`` when not found;
    and whether it was."""
    ends = numbers.get(marker, [])
    at = bisect.bisect_left(ends, first)
    closed = at < len(ends) and ends[at] - first < _HERE_LINES
    return (ends[at], True) if closed else (first + 1, False)


def _here_documents(lines: list[re.Match[str]], numbers: dict[str, list[int]], first: int,
                    markers: Sequence[str]) -> tuple[list[tuple[int, int]], int]:
    """The spans of the lines of the here-documents of one command line, from line ``first``
    to the last of their end ``markers`` (in the order they were written: each document's
    lines follow the one before's end marker), each line read once; and the number of the
    line below."""
    last, closed = first, False
    ends: set[int] = set()  # (the end markers' lines: no document's)
    for marker in markers:
        end, closed = _here_end(numbers, last + 1 if ends else first, marker)
        last = max(last, end)
        if not closed:
            break  # (where the documents after one not closed start is not known)
        ends.add(end)
    spans: list[tuple[int, int]] = []
    for number in range(first, min(last, len(lines))):
        if number in ends:
            continue
        line = lines[number]
        text = line.group()
        spans += _value(_Word(line.string, line.start() + len(text) - len(text.lstrip()),
                              line.start() + len(text.rstrip())))
    return spans, last + closed


def _tool_sequences(text: str) -> list[tuple[int, int]]:
    """:func:`_tool_spans` of a YAML sequence whose first item names a tool, one item a line
    (a container's ``command:`` or a probe's ``exec``), its items the tool's words."""
    spans: list[tuple[int, int]] = []
    items: list[_Word] = []
    indent, last = "", -1
    tool = "?"  # the tool the sequence read names ("" none: its items are not kept; "?" next)
    for item in _TOOL_SEQUENCE_ITEM.finditer(text):
        if item.group("indent") != indent or item.start() != last + 1:  # another sequence
            if items:
                spans += _tool_spans(tool, items[1:])
            items, tool = [], "?"
        indent, last = item.group("indent"), text.find("\n", item.end())
        if tool:
            end = item.start("item") + len(item.group("item").rstrip())
            items.append(_Word(text, *_unquoted(text, item.start("item"), end)))
            if tool == "?":
                tool = _tool_name(items[0].group())
                tool, items = (tool, items) if tool in _TOOLS else ("", [])
    if items:
        spans += _tool_spans(tool, items[1:])
    return spans


def _tool_name(word: str) -> str:
    """The tool a word names: its file's name, in lowercase, without ``.exe``."""
    name = word.strip("\"'").replace("\\", "/").rsplit("/", 1)[-1].lower()
    return name.removesuffix(".exe")


def _unquoted(text: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) of a word without the quotes around it."""
    if end - start >= 2 and text[start] in "\"'" and text[end - 1] == text[start]:
        return start + 1, end - 1
    return start, end


def _value(word: _Word, start: int = 0) -> list[tuple[int, int]]:
    """The span of ``word``'s value from ``start`` characters in, unquoted (also when it starts
    inside the quotes: ``'user%VALUE'``), up to the end of the string the command line is
    written in (:func:`_string_end`: ``["redis-cli -a VALUE"]``), after a ``[REDACTED]`` it
    starts with (``<<< [REDACTED]VALUE``); none for a placeholder or a reference
    (:data:`_NO_VALUE`)."""
    begin, end = _unquoted(word.string, word.start(), _string_end(word))
    begin = max(begin, word.start() + start)
    while word.string.startswith(REDACTED, begin, end):  # (what follows is no less a value)
        begin += len(REDACTED)
    value = word.string[begin:end]
    return [] if not value or _NO_VALUE.fullmatch(value) else [(begin, end)]


def _string_end(word: _Word) -> int:
    """Where ``word`` ends, or the string its command line is written in ends inside it
    (:data:`_STRING_END`): at a quote outside the word's own quoted parts, of the kind of
    one before the word on its line (a quote only the value holds, ``Zq7",Wv9``, is its own)."""
    text, end = word.string, word.end()
    line = text.rfind("\n", 0, word.start()) + 1
    opened: dict[str, bool] = {}  # (looked for once a word: linear)
    quote = _QUOTE.search(text, word.start(), end)
    while quote is not None:
        at = quote.start()
        if _STRING_END.match(text, at, end) is not None and opened.setdefault(
                text[at], _opens(text, text.rfind(text[at], line, word.start()), line)):
            return at
        quoted = _WORD_QUOTED.match(text, at, end)
        quote = None if quoted is None else _QUOTE.search(text, quoted.end(), end)
    return end


def _opens(text: str, at: int, line: int) -> bool:
    """Whether the quote at ``at`` (the last of its kind before a word, on the line starting
    at ``line``; -1: none) opens a string still open at the word: a quote after a space,
    a bracket, a comma, a colon or an ``=`` (``"redis-cli -a X"}``), or an escaped one (inside
    a string's string); not one that closes a word's quoted part (``echo "x" ... -a X"}``)."""
    if at < 0:
        return False
    return at == line or text[at - 1] in " \t[{(,:=\\"


def _tool_spans(tool: str, words: list[_Word]) -> list[tuple[int, int]]:
    """The spans of :func:`_tool_arguments` among one tool's ``words``."""
    spans: list[tuple[int, int]] = []
    flags, (joined, between) = _TOOL_FLAGS.get(tool, frozenset()), _TOOL_JOINED.get(
        tool, (frozenset(), ""))
    for at, word in enumerate(words):
        text = word.group()
        following = words[at + 1] if at + 1 < len(words) else None
        if text in flags and following is not None:
            source = _pass_source(text, following.group()) if tool == "openssl" else 0
            spans += _value(following, source) if source is not None else []
        elif text in joined and following is not None and between in following.group():
            spans += _value(following, following.group().index(between) + 1)
        elif (text[:2] in joined or text.partition("=")[0] in joined) and between in text:
            spans += _value(word, text.index(between) + 1)  # ``-Uuser%VALUE``, ``--user=u%V``
        elif len(text) > 2 and text[:2] in flags and tool in _GETOPT_TOOLS and \
                not text.startswith("--"):
            spans += _value(word, 2 + (text[2] == "="))
        elif len(text) > 2 and text[:2] in _JOINED_ONLY.get(tool, ()):
            spans += _value(word, 2)
        elif tool == "xfreerdp" and text[:3].lower() in ("/p:", "-p:"):
            spans += _value(word, 3)
    plain = [w for i, w in enumerate(words) if not w.group().startswith(("-", "/")) and not (
        i and tool == "rabbitmqctl" and words[i - 1].group() in _RABBIT_OPTIONS)]
    if tool in _ORACLE_TOOLS:
        spans += _oracle_login(tool, plain[:2] if tool == "rman" else plain[:1])
    elif tool == "htpasswd" and any(w.group().startswith("-") and "b" in w.group()
                                    for w in words) and len(plain) >= 2:
        spans += _value(plain[-1])
    elif tool == "rabbitmqctl" and len(plain) >= 3 and plain[0].group() in _RABBIT_PASSWORDS:
        spans += _value(plain[2])
    elif tool == "vault" and len(plain) >= 2 and plain[0].group() == "login" and \
            "=" not in plain[1].group() and any(c.isdigit() or c == "." for c in
                                                 plain[1].group()):
        spans += _value(plain[1])  # (a token holds a digit or a dot: not ``login again``)
    elif tool == "net" and len(plain) >= 3 and plain[0].group().lower() == "user" and \
            plain[2].group() != "*":
        spans += _value(plain[2])
    elif tool == "net" and len(plain) >= 3 and plain[0].group().lower() == "use":
        # ``net use [Z:] \\srv\share PASSWORD [/user:bob]``: the word after the share
        share = next((i for i in (1, 2) if plain[i].group().strip("\"'").startswith("\\")), 0)
        if share and share + 1 < len(plain) and plain[share + 1].group() != "*":
            spans += _value(plain[share + 1])
    return spans


def _oracle_login(tool: str, words: list[_Word]) -> list[tuple[int, int]]:
    """The password of an Oracle tool's ``user/PASSWORD@db`` (``rman target user/PASSWORD``)."""
    spans = []
    for word in words:
        login = word.group().strip("\"'")
        login = login.partition("=")[2] if tool == "rman" and "=" in login else login
        slash, at = login.find("/"), login.rfind("@")
        if slash <= 0 or (tool in _ORACLE_WORDS and at < slash):
            continue
        start = word.group().index(login) + word.start() + slash + 1
        spans.append((start, start + (len(login) if at < slash else at) - slash - 1))
    return spans


# openssl's password arguments (``-pass``, ``-passin``, ``-passout``): ``pass:VALUE`` is the
# password; ``env:NAME``, ``file:PATH``, ``fd:N`` and ``stdin`` say where it is read from
_PASS_FLAGS = frozenset({"-pass", "-passin", "-passout"})
_PASS_SOURCE = re.compile(r"""["']?+(?:(?P<pass>pass:)|(?:env|file|fd):|stdin["']?+\Z)""")


def _pass_source(flag: str, value: str) -> int | None:
    """Where the password starts in an openssl password argument ``value`` of ``flag`` (past
    ``pass:``; 0 for any other flag or form), or None when it names where the password is."""
    source = _PASS_SOURCE.match(value) if flag in _PASS_FLAGS else None
    if source is None:
        return 0
    return source.end() if source.group("pass") else None


def _flag(match: re.Match[str]) -> str:
    flag, sep, value = match.group(1), match.group(2), match.group(3)
    if value.lstrip("\"'").startswith(_ALREADY) or not _credential_flag(flag) or \
            value.strip("\"'").lower() in _NOT_SECRET_VALUES:
        return match.group(0)
    source = _pass_source(flag, value)
    if source is None:
        return match.group(0)  # (``-pass env:NAME``: where, not what)
    if source:  # (``pass:VALUE``: the password after it, its quotes kept)
        closing = value[0] if value[0] in "\"'" and len(value) > 1 and \
            value.endswith(value[0]) else ""
        if not value[source:len(value) - len(closing)]:
            return match.group(0)
        return f"{flag}{sep}{value[:source]}{REDACTED}{closing}"
    if value[:1] in "\"'":
        closing = value[0] if len(value) > 1 and value.endswith(value[0]) else ""
        return f"{flag}{sep}{value[0]}{REDACTED}{closing}"
    return f"{flag}{sep}{REDACTED}"


def _userinfo(match: re.Match[str]) -> str:
    if match.group(3).startswith(_ALREADY):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}:{REDACTED}@"


def _url_userinfo(text: str) -> str:
    """:data:`_URL_USERINFO` in each word (:data:`_URL_WORD`) holding ``://`` before an ``@``,
    read up to its last ``@``, where a match ends: linear time (tried on a whole line, the
    pattern reads the rest of the word again from each ``://`` no ``@`` follows)."""
    if "://" not in text or "@" not in text:
        return text

    def word(match: re.Match[str]) -> str:
        text = match.group()
        last = text.rfind("@")
        if last == -1 or "://" not in text[:last]:
            return text
        return _URL_USERINFO.sub(_userinfo, text[:last + 1]) + text[last + 1:]

    return _URL_WORD.sub(word, text)


def _token_user(match: re.Match[str]) -> str:
    if match.group(2).startswith(_ALREADY):
        return match.group(0)
    return f"{match.group(1)}{REDACTED}@"


# ``env`` output (``API_TOKEN=two words``), also quoted (``"API_TOKEN=two words"``: docker
# inspect): the value of a credential variable runs to the end of its line or its quote.
_ENV_LINE = re.compile(r"(?m)^([ \t]*+(?:export[ \t]++|declare[ \t]++-x[ \t]++)?"
                       r"([A-Z_][A-Z0-9_]*+)=)(?!\[REDACTED\]$)([^\n]++)")
# (to its closing quote: the other quote is part of it, ``"DB_PASSWORD=it's"``)
_QUOTED_ASSIGNMENTS = tuple(
    re.compile(rf"""(?<=(?<!\\){q})(-{{0,2}}+[A-Za-z_][A-Za-z0-9_.-]*+=)"""
               rf"""((?:[^{q}\\\n]|\\.)++)(?={q})""") for q in "\"'")
# ``<password>...</password>``, ``<add key="DbPassword" value="..."/>``
# (a value may start with ``<`` and hold one not followed by a letter or ``/``: ``<secret``,
# ``a < b``; one followed by a letter starts an element, so a line of ``<a>`` is linear);
# a start tag may hold attributes (``<password type="plain">``), and XML may be escaped as
# HTML or a log writes it (``&lt;password&gt;...&lt;/password&gt;``); a CDATA section holds
# any character (read to 256 of them, so that a line of its openings is linear)
_XML_ELEMENT = re.compile(r"<(?P<tag>[A-Za-z_][A-Za-z0-9_.:-]{0,60}+)(?P<attrs>[ \t][^<>\n]*+)?+"
                          r"(?<!/)>"
                          r"(?P<value><!\[CDATA\[(?:[^\]\n]|\](?!\]>)){0,256}+\]\]>|"
                          r"<?+[^<\n]*+(?:<(?![/A-Za-z_])[^<\n]*+)*+)</(?P=tag)>")
# (the same, ``&lt;`` for ``<``: each part stops at the next ``&lt;``, so a line is linear)
_XML_ESCAPED_ELEMENT = re.compile(
    r"&lt;(?P<tag>[A-Za-z_][A-Za-z0-9_.:-]{0,60}+)(?P<attrs>[ \t](?:[^&<>\n]|&(?!gt;|lt;))*+)?+"
    r"(?<!/)&gt;(?P<value>(?:&lt;)?+(?:[^&<\n]|&(?!lt;))*+"
    r"(?:&lt;(?![/A-Za-z_])(?:[^&<\n]|&(?!lt;))*+)*+)&lt;/(?P=tag)&gt;")
# an element named by its attribute (``<entry key="db.password">``: Java's properties XML)
_XML_NAME_ATTRIBUTE = re.compile(r"""\b(?:key|name)[ \t]*+=[ \t]*+(?:"|'|&quot;)"""
                                 r"""(?P<name>[^"'&<>\n]*+)""")
_XML_ATTRIBUTES = re.compile(r"""\b(?:key|name)[ \t]*+=[ \t]*+"(?P<name>[^"\n]*+)"[ \t]++"""
                             r'value[ \t]*+=[ \t]*+"(?P<value>[^"\n]*+)"')
# a two-column line, a name then its value (``password    hunter2``: vault kv get, redis.conf);
# one space apart only for a lowercase name (a directive), not a sentence (``Token expired``)
_SPACED_PAIR = re.compile(r"(?m)^([ \t]*+(?:setenv[ \t]++|set[ \t]++-[A-Za-z]++[ \t]++)?"
                          r"([A-Za-z_][A-Za-z0-9_.-]*+)[ \t]++)(?!\[REDACTED\])(\S++)[ \t]*+$")
# what is no value beside a name that is also a word of commands and prose (``pass``,
# ``pwd``: :data:`_WORD_NAMES`), but says where one is or what to do: a long flag (``hint:
# pass --namespace``), a path of lowercase names (``pwd /root``), a source of a value (``pass
# stdin``). Beside any other name (a directive: ``requirepass /hunter2``, ``AUTH keyring``)
# whatever follows is the value (fail closed)
_WORD_NAMES = frozenset({"pass", "pwd"})
_SPACED_NO_VALUE = re.compile(r"--[a-z][a-z0-9]++(?:-[a-z0-9]++)*+|"
                              r"(?:~|\.{1,2}+)?+(?:/[a-z0-9_.-]++)++/?+|"
                              r"(?:env|environment|file|stdin|prompt|keyring|keychain|tty)")
# a quoted name, then its quoted value: ``define('DB_PASSWORD', 'VALUE')`` (PHP),
# ``ENV["API_TOKEN"] = "VALUE"``, ``'password' => 'VALUE'``; a value not closed within its
# bound (or its line) is redacted to the end of the line (fail closed); a quoted key after a
# name is no value (``"API_TOKEN", "value": ...``)
_QUOTED_NAME_VALUE = re.compile(
    r"""(?P<q>["'])(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,100}+)(?P=q)[ \t]*+\]?[ \t]*+"""
    r"""(?:,|=>?|:)[ \t]*+(?P<v>["'])(?P<value>(?:(?!(?P=v))[^\\\n]|\\.){1,1024}+"""
    r"""(?:(?=(?P=v)(?![ \t]*+:))|(?!(?P=v))[^\n]*+))""")
# SQL: ``IDENTIFIED BY 'VALUE'``, ``WITH PASSWORD 'VALUE'``, ``PASSWORD('VALUE')``
_SQL_PASSWORD = re.compile(r"""(?i)\b(?:identified[ \t]++by|password)(?:[ \t]++|[ \t]*+\()[ \t]*+"""
                           r"""(?P<v>["'])(?P<value>(?:(?!(?P=v))[^\\\n]|\\.){1,1024}+"""
                           r"""(?:(?=(?P=v))|(?!(?P=v))[^\n]*+))""")
# a .netrc entry (``machine HOST login USER password VALUE``), on one line or over several
_NETRC_ENTRY = re.compile(r"(?m)^[ \t]*+(?:machine|default)(?=[ \t\n])[^\n]*+")
_NETRC_PASSWORD = re.compile(r"(?<!\S)(password|passwd|account)([ \t]++)(?!\[REDACTED\])(\S++)")
# password hashes: crypt(3) ($1$, $5$, $6$, $2y$ bcrypt, $apr1$ htpasswd, $argon2id$, ...)
_PASSWORD_HASH = re.compile(r"(?<![A-Za-z0-9_$])\$(?:2[abxy]?|apr1|[1567]|y|gy|scrypt|"
                            r"argon2(?:id|i|d)|pbkdf2(?:-sha[0-9]+)?|sha[0-9]+)\$"
                            r"[./A-Za-z0-9$=,+-]{8,}+")


# a multi-line string (TOML's and Python's ``password = """...""" `` or ``'''``, also raw
# ``r"""``; Go's and JavaScript's backquoted ``token := `...` ``): the value runs over lines to
# its closing delimiter, or to the end of the output (fail closed)
_MULTILINE_STRING = re.compile(r"""(?<![A-Za-z0-9_.-])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*+)"""
                               r"""["']?[ \t]*+(?::=|[:=])[ \t]*+[rRbBuU]{0,2}+"""
                               r"""(?P<q>\"\"\"|'''|`)"""
                               r"""(?P<value>(?:(?!(?P=q))[\s\S])*+)""")


def _multiline_string(match: re.Match[str]) -> str:
    if not match.group("value").strip() or match.group("value").startswith(_ALREADY):
        return match.group(0)
    return _named_value(match.group("name"), match.group(0), match.group("value"),
                        match.start("value") - match.start())


def _named_value(name: str, whole: str, value: str, start: int, *, cell: bool = False) -> str:
    """``whole`` with ``value`` (at ``start`` in it) redacted when ``name`` names a
    credential; what a table shows beside a name is kept when ``value`` is a table's ``cell``
    (:func:`_no_secret`)."""
    if not (credential_name(name) or _credential_flag(name)) or \
            value.strip().startswith(_ALREADY) or _no_secret(value, cell=cell):
        return whole
    return f"{whole[:start]}{REDACTED}{whole[start + len(value):]}"


def _spaced_pair(match: re.Match[str]) -> str:
    """``password    VALUE``, ``requirepass VALUE``, ``setenv NAME VALUE``; not a sentence of
    two words (``Token expired``): one space apart, the name is in one case (``AUTH VALUE``)
    or set; nor, beside ``pass`` or ``pwd``, a word naming where a value is
    (:data:`_SPACED_NO_VALUE`)."""
    lead, name = match.group(1), match.group(2)
    set_ = lead.lstrip().startswith(("setenv", "set "))
    if not (lead.endswith(("  ", "\t")) or name.islower() or name.isupper() or set_) or (
            name.lower() in _WORD_NAMES and _SPACED_NO_VALUE.fullmatch(match.group(3))):
        return match.group(0)
    # a row of two custom columns (``auth-service   Running``) when the name is a resource's
    return _named_value(name, match.group(0), match.group(3), len(lead),
                        cell=not set_ and _RESOURCE_NAME.fullmatch(name) is not None)


def _xml_element(match: re.Match[str]) -> str:
    """An XML element (``_XML_ELEMENT``) with its value redacted when its tag names a credential,
    or else its ``key`` or ``name`` attribute does."""
    name = match.group("tag")
    if not credential_name(name) and match.group("attrs"):
        named = _XML_NAME_ATTRIBUTE.search(match.group("attrs"))
        name = named.group("name") if named else name
    return _named_value(name, match.group(0), match.group("value"),
                        match.start("value") - match.start())


def _structured_text(text: str) -> str:
    """Credentials in ``env`` lines, quoted assignments, XML, password hashes, two-column
    ``name value`` lines and ``.netrc`` entries."""
    if "=" in text:
        text = _ENV_LINE.sub(lambda m: _named_value(
            m.group(2), m.group(0), m.group(3), len(m.group(1))), text)
        for assignment in _QUOTED_ASSIGNMENTS:
            text = assignment.sub(lambda m: _named_value(
                m.group(1)[:-1], m.group(0), m.group(2), len(m.group(1))), text)
    if "<" in text:
        text = _XML_ELEMENT.sub(_xml_element, text)
        text = _XML_ATTRIBUTES.sub(lambda m: _named_value(
            m.group("name"), m.group(0), m.group("value"), m.start("value") - m.start()), text)
    if "&lt;" in text:
        text = _XML_ESCAPED_ELEMENT.sub(_xml_element, text)
    if "$" in text:
        text = _PASSWORD_HASH.sub(REDACTED, text)
    text = _SPACED_PAIR.sub(_spaced_pair, text)
    if "'" in text or '"' in text:
        text = _QUOTED_NAME_VALUE.sub(lambda m: _named_value(
            m.group("name"), m.group(0), m.group("value"), m.start("value") - m.start()), text)
        text = _SQL_PASSWORD.sub(lambda m: _named_value(
            "password", m.group(0), m.group("value"), m.start("value") - m.start()), text)
    if "machine" in text or "default" in text:
        text = _NETRC_ENTRY.sub(lambda m: _NETRC_PASSWORD.sub(
            lambda p: f"{p.group(1)}{p.group(2)}{REDACTED}", m.group()), text)
    return text


def _holds(text: str, *words: str) -> bool:
    """Whether ``text`` holds one of ``words`` (lowercase) in any case, as a ``(?i)`` pattern
    reads it: a rule in any case is tried only when its word is there (a case-insensitive
    pattern is slow to find, a word in the :data:`_FOLD`-ed text fast)."""
    folded = text.translate(_FOLD)
    return any(word in folded for word in words)


def _text_rules(text: str) -> str:
    if _PEM_FAST in text:
        text = _PEM.sub(REDACTED, text)
    if "-----BEGIN " in text:
        text = _KEY_BLOCK.sub(REDACTED, text)
    if '"""' in text or "'''" in text or "`" in text:
        text = _MULTILINE_STRING.sub(_multiline_string, text)
    text = _structured_text(text)
    text = _positional(text)
    if "=\\\n" in text:
        text = _CONTINUED_FLAG.sub(_flag, text)
    text = _JWT_RE.sub(REDACTED, text)
    if _holds(text, "authorization"):
        text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    if _holds(text, "bearer", "token"):
        text = _BEARER_RE.sub(_bearer, text)
    if _holds(text, "basic"):
        text = _BASIC_RE.sub(_basic, text)
    text = _url_userinfo(text)
    if "://" in text and "@" in text:
        text = _URL_TOKEN_USER.sub(_token_user, text)
    text = _continue_cut_values(_pairs(text))
    if "-u" in text or "--user" in text or "-U" in text:
        text = _USER_FLAG.sub(
            lambda m: m.group()[:m.start("value") - m.start()] + REDACTED, text)
    if "mysql" in text or "mariadb" in text:
        text = _MYSQL_LINE.sub(lambda m: _JOINED_P.sub(
            lambda p: f"-p{REDACTED}", m.group()), text)
    text = _tool_arguments(text)
    return _FLAG_RE.sub(_flag, text)


# ---------------------------------------------------------------------------------- positions

# a .pgpass line, ``host:port:database:user:password`` (a host with a letter or a dot, or
# ``*``; a port of 3 to 5 digits, not a time's minutes, or ``*``; ``\:`` escapes a colon):
# the last field is the password
_PGPASS = re.compile(r"(?m)^[ \t]*+(?=[0-9_-]*+[A-Za-z.*\[])(?:\[[0-9A-Fa-f:.]++\]|"
                     r"[A-Za-z0-9_.*-]++):(?:[0-9]{3,5}+|\*):(?:[^\s:\\]|\\.)++:"
                     r"(?:[^\s:\\]|\\.)++:(?!\[REDACTED\])(?P<value>(?:[^:\n\\]|\\.)++)$")
# ``user:PASSWORD@host`` without a scheme (rsync, a git remote, a proxy setting; a password
# holding an ``@`` runs to the last one before the host): not an image digest
# (``nginx:1.27@sha256:...``), a port and a path, or ``mailto:user@host``
_BARE_USERINFO = re.compile(r"(?<![A-Za-z0-9_.+:@%\\-])(?!(?:mailto|sips?|xmpp|tel):)"
                            r"[A-Za-z0-9_.+-]{1,64}+:(?!\[REDACTED\]|[0-9]{1,5}+/)"
                            r"(?P<value>[^\s@:\"'<>]{1,256}+(?:@[^\s@:\"'<>]{1,256}+){0,8})"
                            r"@(?!sha[0-9]{3}+:)(?=[A-Za-z0-9\[])")
# a cell of a delimited table (CSV's quotes kept), and a header cell: a name
_HEADER_CELL = re.compile(r"[ \t]*+[\"']?[A-Za-z0-9_][A-Za-z0-9_ .()/-]{0,63}+[\"']?[ \t]*+")
# a name and its value a ``|`` apart on a line of their own (psql's expanded display, ``\x``:
# ``passwd   | VALUE``; a Markdown table of two columns)
_PIPE_PAIR = re.compile(r"(?m)^[ \t]*+\|?[ \t]*+(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*+)[ \t]*+\|"
                        r"[ \t]*+(?P<value>[^|\n]*+)")
_RULE_LINE = re.compile(r"[-+=|: \t]*+")  # psql's ``-----+-----``, mysql's ``+----+``
# the columns of a whitespace table's header (``NAME   TOKEN   AGE``: two spaces or a tab
# apart; one space inside a column's name, ``NOMINATED NODE``)
_COLUMN = re.compile(r"\S++(?: \S++)*+")
_MAX_COLUMNS = 64
# what a name :func:`credential_name` takes holds (a cheap test before it)
_HINT_WORDS = (r"pass|pw|secret|token|key|auth|cred|cookie|session|dsn|conn|pin|otp|sas|sig|"
               r"salt|hmac")
_CREDENTIAL_HINT = re.compile(rf"(?i){_HINT_WORDS}")
_FOLDED_HINT = re.compile(_trie(_HINT_WORDS.split("|")))  # (the same, in a :data:`_FOLD` text)
_WORD_END = re.compile(r"\S*+")
_WORD = re.compile(r"\S++")
_DASH_RULE = re.compile(r"[ \t]*+-{2,}+(?:[ \t]++-{2,}+)++[ \t]*+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*+")


def _segments(line: str, most: int) -> list[re.Match[str]]:
    """A whitespace table line's cells (two spaces or a tab apart), at most ``most`` + 1."""
    return list(itertools.islice(_COLUMN.finditer(line), most + 1))


def _crosses(starts: list[int], cell: re.Match[str]) -> bool:
    """Whether a row's cell runs over where another column starts (``starts``, ascending)."""
    after = bisect.bisect_right(starts, cell.start())
    return after < len(starts) and starts[after] < cell.end()


# states a row shows and a header does not name (``auth-service   Running`` above
# ``token-refresher   Pending`` is two rows of custom columns; ``READY``, ``AVAILABLE`` are
# also kubectl's columns)
_ROW_STATES = _STATES - {"ready", "available", "active", "created", "error", "failed",
                         "succeeded", "completed", "complete", "unknown", "healthy",
                         "suspended", "paused"}


def _identifier_header(line: str, following: str) -> bool:
    """Whether a line in any case is a table's header: two or more names, each one word
    (``name   secret_key   age``; prose has spaces in its cells; none a state a row shows,
    ``Running``), and the next line a row whose first cell and another start where the
    header's columns do (kubectl aligns them; a cell longer than its header pushes the rest
    right)."""
    if _CREDENTIAL_HINT.search(line) is None:
        return False
    columns = _segments(line, _MAX_COLUMNS)
    if not 2 <= len(columns) <= _MAX_COLUMNS or \
            not all(_IDENTIFIER.fullmatch(c.group()) for c in columns) or \
            any(c.group().lower() in _ROW_STATES for c in columns):
        return False
    starts = {c.start() for c in columns}
    cells = _segments(following, len(columns))
    return len(cells) >= 2 and cells[0].start() == columns[0].start() and \
        sum(c.start() in starts for c in cells) >= 2


def _cells(line: str, sep: str) -> list[tuple[int, int]]:
    """The (start, end) of each cell of a delimited line; a quoted cell holds separators."""
    cells, at = [], 0
    while True:
        if sep == "," and line.startswith('"', at):  # CSV: "a, ""b""", to its closing quote
            close = at + 1
            while (close := line.find('"', close)) != -1 and line.startswith('""', close):
                close += 2
            end = line.find(sep, close + 1) if close != -1 else -1
        else:
            end = line.find(sep, at)
        cells.append((at, len(line) if end == -1 else end))
        if end == -1 or len(cells) > 4 * _MAX_COLUMNS:
            return cells
        at = end + 1


def _next_hinted(text: str, folded: str, index: int, offset: int) -> tuple[int, int]:
    """(index, offset) of the first line from line ``index`` (at ``offset``) of ``text`` that
    :data:`_CREDENTIAL_HINT` finds on (the line count when none does), looked for in
    ``folded``, the text :data:`_FOLD`-ed."""
    hint = _FOLDED_HINT.search(folded, offset)
    if hint is None:
        return text.count("\n", offset) + index + 1, len(text) + 1
    skipped = text.count("\n", offset, hint.start())
    return (index + skipped, text.rfind("\n", 0, hint.start()) + 1) if skipped else (index, offset)


def _hinted_lines(text: str, in_table: Callable[[], bool]
                  ) -> Iterator[tuple[str, int, str | None]]:
    """Each line of ``text`` a table's reader reads, with its offset and the line below it
    (None below the last): while ``in_table()`` is False (no header above), only from the
    next line naming a credential on (:func:`_next_hinted`)."""
    lines, folded = text.split("\n"), text.translate(_FOLD)
    index, offset = -1, 0
    while (index := index + 1) < len(lines):
        if not in_table():
            index, offset = _next_hinted(text, folded, index, offset)
            if index == len(lines):
                return
        line = lines[index]
        base, offset = offset, offset + len(line) + 1
        yield line, base, lines[index + 1] if index + 1 < len(lines) else None


def _delimited(text: str, sep: str) -> list[tuple[int, int]]:
    """A table whose header names a credential column (``name,password`` then
    ``alice,VALUE``; also tab-, ``;``- or ``|``-separated, psql's and mysql's tables): every
    cell of that column, up to a blank line or one without the separator. A row with more or
    fewer cells than the header is redacted from that column's first cell to its end (a value
    holding the separator: fail closed)."""
    spans: list[tuple[int, int]] = []
    columns: list[int] = []
    count = 0
    # (the lambda reads the header found so far at each line: late binding on purpose)
    for line, base, _ in _hinted_lines(text, lambda: bool(columns)):  # noqa: B023
        if columns and line.strip() and _RULE_LINE.fullmatch(line):
            continue  # a table's rule: ``-----+-----``
        if sep not in line or not line.strip():
            columns = []
            continue
        hinted = _CREDENTIAL_HINT.search(line) is not None
        if not columns and not hinted:
            continue
        cells = _cells(line, sep)
        names = [line[a:b] for a, b in cells] if hinted and len(cells) <= _MAX_COLUMNS else []
        credential = [i for i, name in enumerate(names) if name.strip(" \t\"'") and
                      credential_name(name.strip(" \t\"'"))]
        if credential and all(
                _HEADER_CELL.fullmatch(name) or (not name.strip() and i in (0, len(names) - 1))
                for i, name in enumerate(names)):
            columns, count = credential, len(cells)  # a header
            continue
        if not columns:
            continue
        if len(cells) != count:
            if columns[0] < len(cells):
                spans.append((base + cells[columns[0]][0], base + len(line.rstrip())))
            continue
        for i in columns:
            start, end = cells[i]
            value = line[start:end].strip(" \t")
            bare = value.strip("\"'")
            if bare.lower() in _NOT_SECRET_VALUES or bare.startswith(_ALREADY):
                continue
            start += line[start:end].index(value)
            if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
                spans.append((base + start + 1, base + start + len(value) - 1))
            else:
                spans.append((base + start, base + start + len(value)))
    return spans


def _whitespace_table(text: str) -> list[tuple[int, int]]:
    """A table whose header names a credential column, in uppercase (``NAME  TOKEN  AGE``:
    kubectl, kubeadm, docker), above a rule of dashes (``Name  Password`` / ``----
    --------``: PowerShell, az, vault) or of single words above an aligned row
    (``name  secret_key``): each row's cell under it, up to a blank line (in a row not
    aligned with the header, by the count of cells or words, else to the line's end); a
    count (a number of a few digits, ``SECRETS  1``) is kept."""
    spans: list[tuple[int, int]] = []
    starts: list[int] = []
    credential: list[int] = []
    # (the lambda reads the header found so far at each line: late binding on purpose)
    for line, base, below in _hinted_lines(text, lambda: bool(starts)):  # noqa: B023
        if not line.strip():
            starts = []
            continue
        ruled = below is not None and _DASH_RULE.fullmatch(below) is not None
        following = below if below is not None else ""
        columns = _segments(line, _MAX_COLUMNS) \
            if line.isupper() or ruled or _identifier_header(line, following) else []
        if 2 <= len(columns) <= _MAX_COLUMNS and all(
                b.start() - a.end() >= 2 or "\t" in line[a.end():b.start()]
                for a, b in itertools.pairwise(columns)):
            names = [c.group() for c in columns] if _CREDENTIAL_HINT.search(line) else []
            found = [i for i, name in enumerate(names) if credential_name(name)]
            if found:
                starts, credential = [c.start() for c in columns], found
                continue
        if not starts or _DASH_RULE.fullmatch(line):
            continue
        # a row of as many words as columns: its word under the column too (a cell that ran
        # long pushes the rest right of their headers, hand-aligned or cut text)
        words = list(itertools.islice(_WORD.finditer(line), len(starts) + 1))
        # a row whose cells do not start where the header's columns do (a cell ran long):
        # its cell by the count of cells two spaces apart (a value with spaces in it), by
        # the count of words; else, from the column's word to the line's end (fail closed)
        cells = _segments(line, len(starts))
        aligned = all(c.start() in starts and not _crosses(starts, c) for c in cells)
        for i in credential if not aligned else ():
            row = cells if len(cells) == len(starts) else \
                words if len(words) == len(starts) else None
            if row is not None:
                value, at = row[i].group(), row[i].start()
            else:
                at = max(line.rfind(" ", 0, starts[i]), line.rfind("\t", 0, starts[i])) + 1
                value = line[at:].rstrip()
            if value and not (_no_secret(value) or value.startswith(_ALREADY) or
                              _PLACEHOLDER_CELL.fullmatch(value.lower()) or
                              (value.isdigit() and len(value) < 6)):
                spans.append((base + at, base + at + len(value)))
        for i in credential if aligned else ():
            start = starts[i]
            if start >= len(line):
                continue
            # a value that began left of its column, or ran into the next one: whole
            start = max(line.rfind(" ", 0, start), line.rfind("\t", 0, start)) + 1
            end = min(starts[i + 1], len(line)) if i + 1 < len(starts) else len(line)
            if not line[end - 1].isspace():
                end = _WORD_END.match(line, end).end()  # type: ignore[union-attr]
            cell = line[start:end]
            value = cell.strip()
            if not value or _no_secret(value) or value.startswith(_ALREADY) or \
                    _PLACEHOLDER_CELL.fullmatch(value.lower()) or \
                    (value.isdigit() and len(value) < 6):
                continue
            start += cell.index(value)
            spans.append((base + start, base + start + len(value)))
    return spans


# an INI or TOML section (``[credentials]``, ``[db.password]``) and a pair in it
_SECTION = re.compile(r"[ \t]*+\[\[?+[ \t]*+(?P<name>[^\[\]\n]{1,200}+)\]\]?+[ \t]*+")
# where a section may start (a ``[REDACTED]`` line names none: a value an earlier rule took)
_SECTION_START = re.compile(r"^[ \t]*+\[(?!REDACTED\][ \t]*+(?:\n|\Z))", re.MULTILINE)
_SECTION_PAIR = re.compile(r"[ \t]*+(?P<key>[A-Za-z0-9_.\"'-]++)[ \t]*+[=:][ \t]*+"
                           r"(?P<value>[^\n]*+)")


def _sections(text: str) -> list[tuple[int, int]]:
    """The value of a neutral key (``value``, ``key``, ...) in an INI or TOML section named
    like a credential (``[credentials]`` / ``key = VALUE``), up to the next section. Outside
    such a section only the lines that may open one are read (:data:`_SECTION_START`)."""
    spans: list[tuple[int, int]] = []
    named, base = False, 0
    while base <= len(text):
        if not named:
            opening = _SECTION_START.search(text, base)
            if opening is None:
                break
            base = opening.start()
        end = text.find("\n", base)
        end = len(text) if end == -1 else end
        line, offset = text[base:end], base
        base = end + 1
        section = _SECTION.fullmatch(line) if line.lstrip().startswith("[") else None
        if section is not None:
            name = section.group("name").strip().strip("\"'").rsplit(".", 1)[-1]
            named = _neutral_parent(name.strip("\"'"))
            continue
        pair = _SECTION_PAIR.fullmatch(line) if named else None
        if pair is None or _unquote(pair.group("key")).lower() not in _NEUTRAL_KEYS:
            continue
        value = pair.group("value").rstrip()
        if value.strip("\"'").lower() in _NOT_SECRET_VALUES or value.startswith(_ALREADY):
            continue
        start = pair.start("value")
        if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
            start, value = start + 1, value[1:-1]
        spans.append((offset + start, offset + start + len(value)))
    return spans


def _positional(text: str) -> str:
    """Credentials known by their position: a ``.pgpass`` line's last field, the password of
    ``user:PASSWORD@host``, the cells of a table's column whose header names a credential, a
    neutral key's value in a section named like one."""
    spans: list[tuple[int, int]] = []
    if ":" in text:
        spans += [m.span("value") for m in _PGPASS.finditer(text)]
    if "@" in text:
        spans += [m.span("value") for m in _BARE_USERINFO.finditer(text)]
    if "|" in text:
        for pair in _PIPE_PAIR.finditer(text):
            value = pair.group("value").rstrip()
            if value and value.lower() not in _NOT_SECRET_VALUES and \
                    not value.startswith(_ALREADY) and credential_name(pair.group("name")):
                spans.append((pair.start("value"), pair.start("value") + len(value)))
    for sep in (",", "\t", ";", "|"):
        if sep in text:
            spans += _delimited(text, sep)
    spans += _whitespace_table(text)
    if "[" in text:
        spans += _sections(text)
    return _apply(text, spans)


# ---------------------------------------------------------------------------------- command

# kubectl output formats whose output of a Secret is read structurally (the others print its
# values in a shape the rules above cannot see: jsonpath, go-template, custom-columns, ...).
_READABLE_FORMATS = frozenset({"", "yaml", "json", "name", "wide"})
_OUTPUT_FLAGS = ("-o", "--output")
WITHHELD = (f"{REDACTED} (the whole output is withheld: a kubectl template (jsonpath, "
            "go-template, custom-columns) printed Secrets, or fields other than scalars such as "
            ".metadata.name, .status.phase or .spec.replicas, as values redaction cannot read, "
            "or failed and printed the whole object; "
            "select such scalar fields, or use -o yaml or -o json to get whole objects with "
            "their credentials redacted)\n")


def _names_secrets(arg: str) -> bool:
    """Whether a kubectl resource argument names Secrets (``secret``, ``secrets/db``,
    ``configmaps,secrets``, ``secrets.v1.``, ``Secret``)."""
    return any(part.split("/", 1)[0].split(".", 1)[0].strip().lower() in ("secret", "secrets")
               for part in arg.split(","))


# Fields whose values a template prints bare: environment values, arguments, a ConfigMap's
# data, annotations (``-o jsonpath={..env[*].value}`` on pods is as bare as on Secrets).
_VALUE_FIELDS = frozenset({"env", "value", "data", "stringdata", "binarydata", "args",
                           "command", "annotations"})
# Leaves a template may print: scalar fields whose values are names, counts, states, times,
# addresses and images, never a map or a list of maps (``.spec`` prints all below it: an
# environment's values, arguments). ``labels`` (a map of short public strings, which
# ``kubectl get --show-labels`` prints as text anyway) and one label's value are leaves too.
_LEAVES = frozenset({
    # any object
    "kind", "apiVersion", "name", "namespace", "uid", "resourceVersion", "generation",
    "generateName", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
    "labels",
    # status
    "phase", "replicas", "readyReplicas", "availableReplicas", "updatedReplicas",
    "unavailableReplicas", "currentReplicas", "desiredReplicas", "fullyLabeledReplicas",
    "observedGeneration", "type", "status", "reason", "lastTransitionTime", "lastUpdateTime",
    "lastProbeTime", "lastHeartbeatTime", "podIP", "podIPs", "hostIP", "hostIPs", "ip",
    "hostname", "address", "nodeName", "nominatedNodeName", "startTime", "qosClass", "ready",
    "started", "restartCount", "image", "imageID", "containerID", "exitCode", "signal",
    "startedAt", "finishedAt", "active", "succeeded", "failed", "completionTime",
    "lastScheduleTime", "lastSuccessfulTime", "currentNumberScheduled", "numberReady",
    "numberAvailable", "numberUnavailable", "numberMisscheduled", "desiredNumberScheduled",
    "updatedNumberScheduled", "collisionCount", "kubeletVersion", "kubeProxyVersion",
    "containerRuntimeVersion", "osImage", "kernelVersion", "architecture", "operatingSystem",
    "cpu", "memory", "pods", "storage", "ephemeral-storage",
    # spec
    "imagePullPolicy", "serviceAccountName", "schedule", "suspend", "timeZone",
    "concurrencyPolicy", "clusterIP", "clusterIPs", "externalName", "externalIPs",
    "loadBalancerIP", "sessionAffinity", "port", "targetPort", "nodePort", "containerPort",
    "hostPort", "protocol", "appProtocol", "schedulerName", "priorityClassName", "priority",
    "restartPolicy", "dnsPolicy", "hostNetwork", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds", "backoffLimit", "completions", "parallelism", "paused",
    "minReadySeconds", "revisionHistoryLimit", "progressDeadlineSeconds", "minReplicas",
    "maxReplicas", "unschedulable", "podCIDR", "podCIDRs", "providerID", "storageClassName",
    "volumeName", "volumeMode", "accessModes", "persistentVolumeReclaimPolicy", "claimName",
    "ingressClassName", "host", "path", "pathType", "holderIdentity", "leaseDurationSeconds",
    "acquireTime", "renewTime", "leaseTransitions", "current-context", "server",
})
_GO_FORMATS = frozenset({"go-template", "template"})
_JSONPATH_FORMATS = frozenset({"jsonpath", "jsonpath-as-json"})
_TEMPLATE_FORMATS = _GO_FORMATS | _JSONPATH_FORMATS | {"custom-columns"}
_FIELD_NAME = re.compile(r"(?:[A-Za-z0-9_/-]|\\.)++")
_INDEX = re.compile(r"\*|-?[0-9]*+(?::-?[0-9]*+){0,2}")
_FILTER = re.compile(r"""\?\(@(?P<path>(?:\.[A-Za-z0-9_/-]++)++)[ \t]*+"""
                     r"""(?:(?P<op>==|!=|<=|>=|<|>)[ \t]*+(?:"[^"\\{}\[\]()]*+"|"""
                     r"""'[^'\\{}\[\]()]*+'|-?[0-9.]++|true|false))?[ \t]*+\)""")


class _Unreadable(Exception):
    """A template the checks below cannot read (it is withheld)."""


def _check_path(fields: Sequence[str], *, printed: bool) -> None:
    """Raise :class:`_Unreadable` unless ``fields`` (a full path from the object) is safe: no
    field carrying values or named like a credential on the way, and, when its value is
    printed (or compared), a leaf of :data:`_LEAVES` (or one label) at its end."""
    if any(f.lower() in _VALUE_FIELDS or credential_name(f) for f in fields):
        raise _Unreadable
    if printed and not (fields and (fields[-1] in _LEAVES or
                                    (len(fields) > 1 and fields[-2] == "labels"))):
        raise _Unreadable
    # ``status`` is a leaf in a condition only: an object's own is a map (``{.status}``)
    if printed and fields[-1] == "status" and fields[-2:-1] != ["conditions"]:
        raise _Unreadable


def _jsonpath_fields(path: str, context: Sequence[str]) -> list[str]:
    """The fields of a jsonpath expression (``.items[*].metadata.name``, ``@``, ``$.kind``)
    from the object; its filters' fields are checked (``[?(@.type=="Ready")]``)."""
    fields = list(context)
    if path.startswith("$"):
        fields, path = [], path[1:]
    elif path.startswith("@"):
        path = path[1:]
    at = 0
    while at < len(path):
        if path.startswith("..", at):
            raise _Unreadable  # recursive descent: a field of any name anywhere below
        if path[at] == ".":
            name = _FIELD_NAME.match(path, at + 1)
            if path.startswith("*", at + 1):
                raise _Unreadable  # a map's values whatever their name (``{.*.name}``: data's)
            if name:
                fields.append(name.group().replace("\\", ""))
                at = name.end()
            elif at + 1 == len(path) and at == 0:
                at += 1  # ``{.}``: the object itself
            else:
                raise _Unreadable
        elif path[at] == "[":
            close = path.find("]", at)
            inner = path[at + 1:close] if close > 0 else ""
            filtered = _FILTER.fullmatch(inner)
            if close < 0:
                raise _Unreadable
            if _INDEX.fullmatch(inner):
                pass
            elif filtered:
                _check_path([*fields, *filtered["path"][1:].split(".")],
                            printed=bool(filtered["op"]))
            elif len(inner) > 1 and inner[0] == inner[-1] and inner[0] in "'\"" and \
                    not any(c in inner[1:-1] for c in "'\","):
                fields.append(inner[1:-1])
            else:
                raise _Unreadable  # a union of fields, or what this cannot read
            at = close + 1
        else:
            raise _Unreadable
    return fields


def _actions(template: str, left: str, right: str) -> Iterable[str]:
    """The actions of a template (between ``left`` and ``right``), quotes respected."""
    at = template.find(left)
    while at >= 0:
        at += len(left)
        i, quote = at, ""
        while i < len(template):
            char = template[i]
            if quote:
                if char == "\\" and quote != "`":
                    i += 1
                elif char == quote:
                    quote = ""
            elif char in "\"'`":
                quote = char
            elif template.startswith(right, i):
                break
            i += 1
        else:
            raise _Unreadable  # an action never closed
        yield template[at:i]
        at = template.find(left, i + len(right))


_JSON_STRING_ACTION = re.compile(r'"(?:[^"\\]|\\.)*+"')


def _check_jsonpath(template: str) -> None:
    """Raise :class:`_Unreadable` unless every field a jsonpath template prints is a leaf."""
    contexts: list[list[str]] = [[]]
    for action in _actions(template, "{", "}"):
        action = action.strip()
        if _JSON_STRING_ACTION.fullmatch(action):
            continue
        if action == "end":
            if len(contexts) == 1:
                raise _Unreadable
            contexts.pop()
        elif action.startswith("range ") or action.startswith("range\t"):
            fields = _jsonpath_fields(action[6:].strip(), contexts[-1])
            _check_path(fields, printed=False)
            contexts.append(fields)
        else:
            _check_path(_jsonpath_fields(action, contexts[-1]), printed=True)


_GO_TOKEN = re.compile(r"""[ \t\r\n]*+(?:(?P<string>"(?:[^"\\\n]|\\.)*+"|`[^`]*+`)|"""
                       r"""(?P<field>\.(?:[A-Za-z_][A-Za-z0-9_]*+(?:\.[A-Za-z_][A-Za-z0-9_]*+)*+)?)|"""
                       r"""(?P<number>-?[0-9][0-9.]*+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*+)|"""
                       r"""(?P<pipe>\|))""")
_GO_PRINT = frozenset({"print", "printf", "println"})
_GO_COMPARE = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not"})


def _go_pipeline(text: str) -> list[list[tuple[str, str]]]:
    """A go-template pipeline as its commands (``|``-separated), each a list of (kind, text)
    tokens; anything else (variables, parentheses, ``index``...) is unreadable."""
    commands: list[list[tuple[str, str]]] = [[]]
    at = 0
    text = text.rstrip(" \t\r\n")
    while at < len(text):
        token = _GO_TOKEN.match(text, at)
        if not token or token.end() == at:
            raise _Unreadable
        kind = token.lastgroup or ""
        if kind == "pipe":
            commands.append([])
        else:
            commands[-1].append((kind, token[kind]))
        at = token.end()
    if any(not command for command in commands):
        raise _Unreadable
    return commands


def _go_fields(field: str, context: Sequence[str]) -> list[str]:
    return [*context, *(f for f in field.split(".") if f)]


def _check_go_output(text: str, context: Sequence[str]) -> None:
    """A printed pipeline: literals, fields ending in a leaf, ``print``/``printf`` of them."""
    for n, command in enumerate(_go_pipeline(text)):
        (kind, word), *args = command
        if kind == "word" and word in _GO_PRINT:
            pass
        elif args or kind == "word" or (n and kind != "word"):
            raise _Unreadable  # a function of its own, or a value piped into no function
        for kind, word in command:
            if kind == "field":
                _check_path(_go_fields(word, context), printed=True)
            elif kind == "word" and word not in _GO_PRINT:
                raise _Unreadable


# Lists a go-template ``range`` iterates: its item is an element. Over a map, ``range`` makes
# each value current whatever its key (``{{range .spec}}{{.name}}{{end}}`` prints
# ``.spec.<any>.name``, a key carrying values or named like a credential skipped unseen), so a
# range over any other field is not read. ``labels`` holds strings only.
_GO_RANGE_LISTS = frozenset({
    "items", "containers", "initContainers", "ephemeralContainers", "containerStatuses",
    "initContainerStatuses", "ephemeralContainerStatuses", "conditions", "ports",
    "addresses", "podIPs", "hostIPs", "clusterIPs", "externalIPs", "volumes", "volumeMounts",
    "rules", "paths", "subsets", "endpoints", "ownerReferences", "tolerations", "taints",
    "images", "finalizers", "subjects", "ingress", "accessModes", "clusters", "contexts",
    "labels",
})


def _go_context(text: str, context: Sequence[str], *, condition: bool,
                ranged: bool = False) -> list[str]:
    """What ``range`` (``ranged``: over a list of :data:`_GO_RANGE_LISTS` only), ``with``
    (or, ``condition``, ``if``) makes the current item: a field's path; a comparison of
    leaves (``if eq .status.phase "Running"``) keeps it."""
    commands = _go_pipeline(text)
    if len(commands) == 1 and len(commands[0]) == 1 and commands[0][0][0] == "field":
        fields = _go_fields(commands[0][0][1], context)
        _check_path(fields, printed=False)
        if ranged and (not fields or fields[-1] not in _GO_RANGE_LISTS):
            raise _Unreadable
        return fields if not condition else list(context)
    if not condition or len(commands) != 1 or commands[0][0] not in {
            ("word", w) for w in _GO_COMPARE}:
        raise _Unreadable
    for kind, word in commands[0][1:]:
        if kind == "field":
            _check_path(_go_fields(word, context), printed=True)
        elif kind == "word":
            raise _Unreadable
    return list(context)


_GO_TRIM_LEFT = re.compile(r"^-[ \t\r\n]")
_GO_TRIM_RIGHT = re.compile(r"[ \t\r\n]-$")


def _check_go_template(template: str) -> None:
    """Raise :class:`_Unreadable` unless every field a go-template prints is a leaf."""
    # each open block: the current item inside it, and the one outside it
    blocks: list[tuple[list[str], list[str]]] = []
    context: list[str] = []
    for action in _actions(template, "{{", "}}"):
        action = _GO_TRIM_RIGHT.sub("", _GO_TRIM_LEFT.sub("", action)).strip(" \t\r\n")
        keyword, _, rest = action.partition(" ")
        if keyword == "end" and not rest and blocks:
            context = blocks.pop()[1]
        elif keyword == "else" and blocks:
            outer = blocks[-1][1]
            then, _, pipeline = rest.strip().partition(" ")
            if not then:
                context = outer
            elif then in ("if", "with"):
                context = _go_context(pipeline, outer, condition=then == "if")
            else:
                raise _Unreadable
        elif keyword in ("range", "with", "if"):
            blocks.append((context, context))
            context = _go_context(rest, context, condition=keyword == "if",
                                  ranged=keyword == "range")
            blocks[-1] = (context, blocks[-1][1])
        elif action and not keyword.startswith("/*") and keyword not in (
                "end", "else", "template", "define", "block", "break", "continue", "nil"):
            _check_go_output(action, context)
        else:
            raise _Unreadable
    if blocks:
        raise _Unreadable


def _check_custom_columns(spec: str) -> None:
    """Raise :class:`_Unreadable` unless each column's path ends in a leaf."""
    for column in spec.split(","):
        header, colon, path = column.partition(":")
        path = path.strip()
        if path.startswith("{") and path.endswith("}"):
            path = path[1:-1]
        elif not path.startswith("."):
            path = "." + path
        if not colon or not header.strip():
            raise _Unreadable
        _check_path(_jsonpath_fields(path, []), printed=True)


def _prints_values(language: str, template: str) -> bool:
    """Whether a template (``language``: jsonpath, go-template or custom-columns) may print a
    value that is not a known leaf (:data:`_LEAVES`): it fails closed, so a whole object
    (``{.spec}``, ``{@}``, ``{{.}}``), a map, a field carrying values, and anything it cannot
    read (``index``, variables, ``..``, a function it does not know) count as printing values."""
    try:
        if language in _JSONPATH_FORMATS:
            _check_jsonpath(template)
        elif language in _GO_FORMATS:
            _check_go_template(template)
        elif language == "custom-columns":
            _check_custom_columns(template)
        else:
            return True
    except _Unreadable:
        return True
    return False


# kubectl's one-letter flags that take a value (the rest of the word, or the next word)
_SHORT_VALUE = frozenset("nvloceLksfp")


def _short_flags(arg: str) -> tuple[str, str | None]:
    """The one-letter flags a word (``-Ao``, ``-Rf``, ``-ojson``) sets as kubectl reads it,
    and the value its last one takes from the word (``""``: from the next word; ``None``:
    it takes none)."""
    for index in range(1, len(arg)):
        if arg[index] in _SHORT_VALUE or arg[index + 1:].startswith("="):
            return arg[1:index + 1], arg[index + 1:].removeprefix("=")
    return arg[1:], None



def _kubectl_flags(args: Sequence[str]) -> list[str]:
    """The words of a kubectl command before the ``--`` that ends its flags (what follows is
    the command ``kubectl exec`` runs: its ``-o`` is no output format). A ``--`` a flag takes
    as its value (``--field-manager -- -o jsonpath=...``, ``-l --``) ends nothing: a long flag
    not known to take no value is read as taking one (fail closed)."""
    for i, arg in enumerate(args):
        if arg != "--":
            continue
        before = args[i - 1] if i else ""
        if before.startswith("--") and "=" not in before and before not in SWITCH_FLAGS:
            continue
        if before.startswith("-") and not before.startswith("--") and \
                _short_flags(before)[1] == "":
            continue
        return list(args[:i])
    return list(args)


# What kubectl prints when a template fails as it runs (a field of a string, a range over a
# map of strings): the whole object, in JSON and in Go-map form, for debugging the template.
_TEMPLATE_DUMP = re.compile(r"(?i)(?:raw data|object given to \w++ engine) was:|"
                            r"Printing more information for debugging the template")


def withholds(command: Sequence[str]) -> bool:
    """Whether the output of ``command`` is withheld whole: a kubectl command naming Secrets
    (or reading manifests, ``-f``/``-k``, that may hold them) with an output format other than
    yaml, json, name or wide (``-o jsonpath=...``, ``go-template``, ``custom-columns``,
    ``--template``), whose values no rule can tell from the rest; and, whatever it names, a
    kubectl template that prints anything but known scalar leaves (:func:`_prints_values`:
    ``{.spec}``, ``{{.}}``, ``{..env}``, a field carrying values, what it cannot read) or is
    read from a file. Fails closed: an output format it does not know is not readable."""
    if not command or command[0] != "kubectl":
        return False
    formats: list[str] = []
    given: list[str] = []  # --template's text
    secrets = False
    args = _kubectl_flags(command[1:])
    for i, arg in enumerate(args):
        flag, eq, inline = arg.partition("=")
        if arg in _OUTPUT_FLAGS:
            formats.append(args[i + 1] if i + 1 < len(args) else "")
        elif eq and flag in _OUTPUT_FLAGS:
            formats.append(inline)
        elif arg.startswith("-") and not arg.startswith("--"):
            letters, value = _short_flags(arg)  # ``-Ao jsonpath=...``, ``-Rf x.yaml``
            if letters.endswith("o") and value is not None:
                formats.append(value or (args[i + 1] if i + 1 < len(args) else ""))
            secrets = secrets or "f" in letters or "k" in letters
        elif flag == "--template":
            given.append(inline if eq else args[i + 1] if i + 1 < len(args) else "")
        elif flag in ("--filename", "--kustomize"):
            secrets = True  # manifests: they may hold Secrets
        elif not arg.startswith("-") and _names_secrets(arg):
            secrets = True
    templates = [f for f in formats if f.split("=", 1)[0].strip().lower()
                 not in _READABLE_FORMATS]
    named = {f.split("=", 1)[0].strip().lower() for f in templates}
    if secrets and (given or templates):
        return True
    for template in templates:
        name, eq, text = template.partition("=")
        name = name.strip().lower()
        # a template from a file, or a format this does not know given a text
        if name.endswith("-file") or (eq and name not in _TEMPLATE_FORMATS) or (
                eq and _prints_values(name, text)):
            return True
    # --template is read in the language -o names (go-template when it names none)
    languages = (named & _TEMPLATE_FORMATS) or {"go-template"}
    return any(_prints_values(language, text) for text in given for language in languages)


# ---------------------------------------------------------------------------------- entry


# (an escaped line break after a space is a shell's continuation, not a YAML string's)
_STRING_ESCAPE = re.compile(r"""\\(?:u(?P<code>[0-9A-Fa-f]{4})|(?P<char>["'\\/bfnrt])|"""
                            r"""(?<![ \t]\\)(?P<fold>\n[ \t]*+))""")
_UNESCAPED = {"b": "", "f": "", "n": "\n", "r": "\n", "t": "\t"}
_MAX_UNESCAPES = 2


def _unescape(text: str) -> str:
    """``text`` with JSON (and YAML double-quoted) string escapes decoded (``\\"``, ``\\n``,
    ``\\u0022``, an escaped line break), so what an escaped document (a
    ``last-applied-configuration`` in ``-o json``) holds can be read."""

    def one(match: re.Match[str]) -> str:
        if match.group("fold") is not None:  # a YAML double-quoted line break: joined
            return ""
        if match.group("code") is not None:
            char = chr(int(match.group("code"), 16))
            return char if char.isprintable() or char in "\n\t" else match.group(0)
        return _UNESCAPED.get(match.group("char"), match.group("char"))

    return _STRING_ESCAPE.sub(one, text)


# ---------------------------------------------------------------------------------- values

# A value is often a text of its own: a config file in a ConfigMap (``redis.conf: requirepass
# X``), a command line in an annotation, an env value holding another assignment. The rules
# that read a line from its start (``requirepass X``, ``.netrc``, ``.pgpass``, a CSV header,
# ``NAME=value``) see such a value only after its key: :func:`_values_as_text` reads each one
# again on a line of its own.
# a YAML key (quoted, or plain: any characters but ``: `` and parentheses, ``my@conf``, ``a:b``;
# not a call's or a signature's ``f(a: T)``) and its value,
# or a sequence item, at the start of a line, after the value's tag and anchor (``!!str``,
# ``&a``); a flow collection's start (its items are values: :data:`_FLOW_ITEM`); a shell
# assignment (``NAME=``, ``export NAME=``, ``declare -x NAME=``); a name and its value with no
# space between (``x:requirepass X``: a config dump's, not YAML's)
_YAML_KEY_TEXT = (r"""(?:"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+'|"""
                  r"""[^\s"'#{}\[\],:()](?:[^:\n()]|:(?![ \t]|$))*+)""")
_YAML_PROPERTIES = r"""(?:[!&][^\s,\[\]{}]*+[ \t]++)*+"""
_YAML_VALUE = re.compile(r"""(?m)^[ \t]*+(?:(?:-[ \t]++)++(?:""" + _YAML_KEY_TEXT +
                         r"""[ \t]*+:[ \t]++)?+|(?:-[ \t]++)*+""" + _YAML_KEY_TEXT +
                         r"""[ \t]*+:[ \t]++|(?:(?:export|declare|typeset|readonly|local)"""
                         r"""(?:[ \t]++-[A-Za-z]++)*+[ \t]++)?+[A-Za-z_][A-Za-z0-9_]*+=|"""
                         r"""[A-Za-z_][A-Za-z0-9_.\-/]*+:(?![\s:/\\])|(?=[{\[]))""" +
                         _YAML_PROPERTIES +
                         r"""(?=\S)""")
# an item of a flow collection (``{a: "requirepass X", b: 1}``, ``[requirepass X, b]``): after
# its ``{``, ``[`` or ``,``, its key if any, its tag and anchor
_FLOW_ITEM = re.compile(r"""(?<=[{\[,])[ \t]*+(?:(?:"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+'|"""
                        r"""[^\s,{}\[\]:"'](?:[^,{}\[\]:\n]|:(?![ \t]))*+)[ \t]*+:[ \t]++)?+"""
                        + _YAML_PROPERTIES + r"""(?=[^\s,{}\[\]])""")
_FLOW_PLAIN = re.compile(r"[^,{}\[\]\n]*+")
# a quoted value of a ``key=`` pair anywhere on a line (logfmt's ``msg="..."``, a shell's
# ``export NAME="..."``)
_ASSIGNED_QUOTE = re.compile(r"""(?<![^\s])[A-Za-z_][A-Za-z0-9_.\-]*+=(?=["'])""")
# JSON's values: a key's (``"key": "value"``: tried at each quote, a key holds none, so a
# string inside a string decoded, ``"x": "{"a": "requirepass X"}"``, is found too), and an
# array's items (``["requirepass X", ...]``, one to a line or not), and a string standing
# alone on its line, indented or not (a JSON document that is one string, a line of a list:
# from the line's very start, one closed on it, ``"x: {a: \"requirepass X\"}"``)
_JSON_PAIR_VALUE = re.compile(r'"[^"\\\n]*+"[ \t]*+:[ \t]*+(?=")')
_JSON_ITEM = re.compile(r'(?:(?<=[\[,])[ \t]*+|^[ \t]++|'
                        r'^(?="(?:[^"\\\n]|\\.)*+"[ \t]*+(?:[,\]\n]|\Z)))(?=")', re.MULTILINE)
_ITEM_END = re.compile(r"[ \t]*+(?:[,\]]|$)", re.MULTILINE)
_SINGLE_QUOTED_LINE = re.compile(r"'(?:[^'\n]|'')*+'?")
_DOUBLE_QUOTED_LINE = re.compile(r'"(?:[^"\\\n]|\\.)*+"?')
# what a value must hold to be read as a line: a separator between two of its words
_SEPARATED = re.compile(r"\S[\s,:=@|;]")
_ALNUM = re.compile(r"[A-Za-z0-9]")  # (and a letter or digit: ``{ `` is no text to read)
# prose: a word naming a credential, then lowercase words (``token expired``, ``password
# reset``, ``auth required``: a message, not ``requirepass VALUE``), one of them a word a
# message says (:data:`_PROSE_WORDS`; ``password hunter`` is a name and its value); never in
# a file's text (a value under a key naming a file: ``redis.conf: "password expired"``)
_PROSE_VALUE = re.compile(r"(?i)(?:token|password|passwd|secret|auth|key|cookie|pwd|otp|pin|"
                          r"salt|session|credentials?|api|passphrase|signature)"
                          r"(?:[ \t]++[a-z]++)++[ \t]*+")
# what a message says of a credential: a state, a verb, a word of a sentence, a participle
# (:func:`_participle`)
_PROSE_WORDS = frozenset({
    "reset", "set", "unset", "sent", "found", "lost", "given", "done", "gone", "made", "seen",
    "shown", "known", "hidden", "taken", "stolen", "written", "broken", "forbidden",
    "invalid", "valid",
    "ok", "okay", "error", "errors", "failure", "mismatch", "incorrect", "wrong", "empty",
    "missing", "required", "expiry", "expires", "expire", "refresh", "refreshes", "renew",
    "rotate", "rotates", "rotation", "change", "changes", "check", "checks", "match",
    "matches", "weak", "strong", "short", "too", "long", "length", "policy", "stale", "old",
    "new", "ready", "active", "inactive", "unknown", "success", "successful", "complete",
    "not", "no", "is", "was", "are", "were", "has", "had", "have", "will", "must", "can",
    "cannot", "should", "may", "does", "did", "for", "of", "to", "the", "a", "an", "in", "on",
    "at", "by", "with", "from", "and", "or", "as", "now", "again", "already", "yet", "still",
    "please", "hint", "prompt", "request", "requests", "flow", "login", "logout", "status",
    "state", "timeout", "limit", "usage", "update", "updates", "test", "tests"})
# the participles a message says of a credential, and those of the verbs above
# (``refreshed``, ``rotating``): not any word ending so (``password foobared``: its value)
_PARTICIPLES = frozenset({
    "expired", "expiring", "changed", "changing", "rotated", "rotating", "refreshed",
    "refreshing", "renewed", "renewing", "updated", "updating", "required", "requested",
    "rejected", "denied", "accepted", "verified", "verifying", "validated", "validating",
    "generated", "generating", "created", "creating", "deleted", "deleting", "removed",
    "revoked", "reused", "locked", "unlocked", "stored", "saved", "loaded", "loading",
    "failed", "failing", "missing", "matched", "mismatched", "provided", "supplied",
    "encrypted", "decrypted", "hashed", "masked", "redacted", "ignored", "disabled",
    "enabled", "configured", "cleared", "issued", "pending", "waiting", "retrying",
    "succeeded", "applied", "mounted", "synced", "compromised", "leaked", "exposed",
    "authenticated", "authorized", "unauthorized", "granted", "reset", "resetting", "received",
    "written", "obtained", "fetched", "fetching", "acquired", "acquiring", "logged", "started",
    "starting", "completed", "stopped", "restarted", "timed", "exceeded", "truncated"})


def _participle(word: str) -> bool:
    """Whether ``word`` is a participle a message says of a credential (:data:`_PARTICIPLES`,
    or a verb of :data:`_PROSE_WORDS` ending so: ``checked``, ``rotating``)."""
    if word in _PARTICIPLES:
        return True
    stems = (word[:-2], word[:-1]) if word.endswith("ed") else \
        (word[:-3], word[:-3] + "e") if word.endswith("ing") else ()
    return any(stem in _PROSE_WORDS for stem in stems)


# a key naming a file (a ConfigMap's ``redis.conf``, ``.pgpass``): its value is the file's text
_FILE_EXTENSIONS = frozenset({"conf", "cnf", "cfg", "ini", "properties", "env", "toml", "yaml",
                              "yml", "json", "txt", "sh", "xml", "config", "pgpass", "netrc",
                              "htpasswd"})
_KEY_WORDS = re.compile(r"[\s{,\[]++")
# a line break or a quote escaped in a double-quoted string (``\n``, ``\r\n``, ``\"``; not
# ``\\n``): a value read with them as line breaks and quotes (``"Bearer X\nrequirepass Y"``, a
# YAML document in a JSON string, ``"x: \"requirepass Y\""``) keeps them escaped
_ESCAPED_BREAK = re.compile(r"\\(r\\n|n|\")|\\.")
_UNESCAPED_SPACE = re.compile(r"(?<!\\)[ \t]")  # (an unquoted value's spaces: a shell's \ )
_UNESCAPED_QUOTE = re.compile(r'(?:^|[^\\])(?:\\\\)*+"')  # (a quote no backslash escapes)
_MARKS = "\ue000\ue001\ue002\ue003"  # (private use: :func:`clean` removes them from output)
_MAX_VALUE_DEPTH = 1  # a value in a value: an env value's, a config line's
# between two values read together: a blank line ends a table, a CSV, a continued value
_VALUE_BREAK = "\n\n{}\n\n"


def _value_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each value :data:`_YAML_VALUE`, :data:`_ASSIGNED_QUOTE`,
    :data:`_JSON_PAIR_VALUE` or :data:`_JSON_ITEM` gives, and of each item of a flow
    collection :data:`_YAML_VALUE` starts: a quoted one without its quotes (to its line's end
    when not closed on it). A line of ``key=value`` pairs (logfmt's) is read pair by pair
    when one is quoted (``level=info msg="..."``): its quoted values are read as texts, and
    a ``NAME=`` value at its start up to the first of them (``NETRC=machine h ... note="a"``)."""
    pairs = list(_ASSIGNED_QUOTE.finditer(text)) if '"' in text or "'" in text else []
    assigned = [m.end() for m in pairs]
    spans = [_quoted_span(text, at) for at in assigned]
    for line in _YAML_VALUE.finditer(text):
        at = line.end()
        end = text.find("\n", at)
        end = len(text) if end == -1 else end
        if text.startswith(_ALREADY, at):
            continue
        if text[at] in "{[":
            spans += _flow_spans(text, at, end)
        elif text[at] in "\"'":
            spans.append(_quoted_span(text, at))
        elif not line.group().endswith("="):
            spans.append((at, end))
        else:  # (``NAME=`` read to the first quoted pair on its line, if any: its words)
            first = bisect.bisect_left(assigned, at)
            stop = pairs[first].start() if first < len(pairs) and assigned[first] < end else end
            spans.append((at, at + len(text[at:stop].rstrip())))
    if '"' in text:
        spans += [_quoted_span(text, m.end()) for m in _JSON_PAIR_VALUE.finditer(text)]
        for item in _JSON_ITEM.finditer(text):
            start, end = _quoted_span(text, item.end())
            # (a string alone, or before the next item; to another line, whatever follows)
            if _ITEM_END.match(text, end + 1) or "\n" in text[start:end]:
                spans.append((start, end))
    return spans


def _prose(text: str, start: int, end: int) -> bool:
    """Whether the value ``text[start:end]`` is a message about a credential, not a name and
    its value (:data:`_PROSE_VALUE`)."""
    if _PROSE_VALUE.fullmatch(text, start, end) is None:
        return False
    words = [w.lower() for w in text[start:end].split()[1:]]
    if not any(w in _PROSE_WORDS or _participle(w) for w in words):
        return False
    # the key it is the value of (on its line, before its ``:`` or ``=``, a tag, a quote)
    line = text.rfind("\n", 0, start) + 1
    words = text[max(line, start - 256):start].rstrip(" \t\"'").split()
    while words and words[-1][0] in "!&":
        words.pop()
    key = words[-1].rstrip("\"'") if words else ""
    if key in (":", "=") and len(words) > 1:  # (``"redis.conf" : "..."``)
        key = words[-2].rstrip("\"'") + key
    if not key.endswith((":", "=")):
        return True
    _, dot, extension = _KEY_WORDS.split(key[:-1])[-1].strip("\"'").rpartition(".")
    return not dot or extension.lower() not in _FILE_EXTENSIONS


def _past_redacted(text: str, start: int, end: int) -> int:
    """Where a value at ``start`` goes on past the ``[REDACTED]`` it starts with, if any, and
    the spaces and punctuation after it (``end`` when nothing else follows)."""
    at = start
    while text.startswith(_ALREADY, at) and at < end:
        at = text.find("]", at, end) + 1 or end
        while at < end and not text[at].isalnum() and text[at] not in "[-":
            at += 1
    return at


def _flow_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each item of the flow collection at ``start`` (:data:`_FLOW_ITEM`), to
    ``end`` (its line's): a quoted one without its quotes, a plain one to its ``,``, ``}``
    or ``]``; the next item looked for after it (not inside a quoted one: linear)."""
    spans = []
    item = _FLOW_ITEM.search(text, start, end)
    while item is not None:
        at = item.end()
        if text[at] in "\"'":
            spans.append(_quoted_span(text, at))
            after = spans[-1][1] + 1
        else:
            plain = _FLOW_PLAIN.match(text, at, end)
            after = plain.end() if plain else at
            spans.append((at, at + len(plain.group().rstrip()) if plain else at))
        item = _FLOW_ITEM.search(text, max(after, at + 1), end) if after < end else None
    return spans


def _quoted_span(text: str, at: int) -> tuple[int, int]:
    """(start, end) of what the string quoted at ``at`` holds: to its closing quote on its
    line, else (a string holding line breaks, decoded; a YAML string folded over lines) to
    the next quote of its kind, or the text's end."""
    string = (_DOUBLE_QUOTED_LINE if text[at] == '"' else _SINGLE_QUOTED_LINE).match(text, at)
    if string is not None and len(string.group()) >= 2 and string.group()[-1] == text[at]:
        return at + 1, string.end() - 1
    end = text.find(text[at], at + 1)
    return at + 1, len(text) if end == -1 else end


def _values_as_text(text: str, depth: int = 0) -> str:
    """``text`` with what the text rules find in each value read as a text of its own (see
    :data:`_YAML_VALUE`): the values holding a separator (but prose, :data:`_PROSE_VALUE`)
    are read together, each on lines of its own (:func:`_read_values`), and only they change;
    so is a value inside a value (``REDIS_CONF=requirepass X``), one level deep.
    (A JSON string inside a JSON string is read where :func:`redact` reads the text with its
    escapes decoded.)"""
    if depth > _MAX_VALUE_DEPTH or not _SEPARATED.search(text):
        return text
    mark = next(m for m in _MARKS if m not in text)  # (cleaned text holds none; nested, one)
    chosen: list[tuple[int, int]] = []
    for start, end in sorted(_value_spans(text)):
        # (a value redacted before is not read again, but what follows it on its lines is:
        # ``"[REDACTED]\nrequirepass X"``, a token's line redacted above a config's)
        if start < (chosen[-1][1] if chosen else 0) or end <= start:
            continue
        rest = _past_redacted(text, start, end)
        if _SEPARATED.search(text, rest, end) is not None and \
                _ALNUM.search(text, rest, end) is not None and \
                not _prose(text, start, end):
            chosen.append((start, end))
    if not chosen:
        return text
    escapes = [_escaped(text, start, end) for start, end in chosen]
    values = [_unescaped(text[start:end], chars) for (start, end), chars in
              zip(chosen, escapes, strict=True)]
    read = _read_values(values, mark, depth)
    out, last = [], 0
    for (start, end), value, again, chars in zip(chosen, values, read, escapes, strict=True):
        if again != value:
            for char, escape in chars:
                again = again.replace(char, escape)
            out += [text[last:start], again]
            last = end
    return "".join([*out, text[last:]]) if out else text


def _escaped(text: str, start: int, end: int) -> tuple[tuple[str, str], ...]:
    """The characters a value at ``start`` writes escaped only, each with its escape, so that
    the value is read with the characters and written back with the escapes: a quoted one's
    line breaks (``\\n``, or ``\\r\\n`` when it holds one; :data:`_ESCAPED_BREAK`) and a
    double-quoted one's quotes (``\\"``; not in a JSON document, nor beside a JSON key's
    ``\\":``), an unquoted one's spaces (a shell's
    ``requirepass\\ X``); none otherwise."""
    value, before = text[start:end], text[start - 1] if start else ""
    if before in ("'", '"'):
        breaks = (("\n", "\\r\\n" if "\\r\\n" in value else "\\n"),) if "\\n" in value and \
            "\n" not in value else ()
        quotes = (('"', '\\"'),) if before == '"' and '\\"' in value and '\\":' not in value \
            and value.lstrip()[:1] not in ("{", "[") and _UNESCAPED_QUOTE.search(value) is None \
            else ()  # (a JSON document in a string is read where :func:`redact` decodes it)
        return breaks + quotes
    if before and "\\ " in value and _UNESCAPED_SPACE.search(value) is None:
        return ((" ", "\\ "),)
    return ()


def _unescaped(value: str, chars: tuple[tuple[str, str], ...]) -> str:
    """``value`` with what writes each of ``chars`` (:func:`_escaped`) read as it."""
    if chars and chars[0][0] == " ":
        return value.replace("\\ ", " ")
    read = {"n" if char == "\n" else char for char, _ in chars}
    return _ESCAPED_BREAK.sub(lambda m: m.group() if m.group(1) is None or
                              m.group(1)[-1] not in read else
                              "\n" if m.group(1) != '"' else '"', value) if chars else value


def _read_values(values: list[str], mark: str, depth: int) -> list[str]:
    """``values`` read by the text rules, each as a text of its own: together, a blank line,
    a line of ``mark`` and a blank line between each two, in one pass when every mark is left
    (a rule reading across lines may take one: then in halves, down to one value a pass)."""
    between = _VALUE_BREAK.format(mark)
    read = _values_as_text(_text_rules(between.join(values)), depth + 1)
    parts = read.split(between)
    if len(parts) == len(values):
        return parts
    if len(values) == 1:
        return [read]
    half = len(values) // 2
    return _read_values(values[:half], mark, depth) + _read_values(values[half:], mark, depth)


def _redact_once(text: str, secrets: Iterable[str], beyond: tuple[bool, bool],
                 cut: bool = False) -> str:
    text = clean(text)
    text = _redact_known(text, secrets, cut)
    text = _apply(text, _Structure(text, beyond).run())
    if _PEM_FAST in text:
        text = _PEM.sub(REDACTED, text)
    text = _redact_encoded(text)
    text = _text_rules(text)
    text = _values_as_text(text)
    text = _redact_base64_values(text)
    return _TOKEN_SHAPES.sub(REDACTED, text) if _TOKEN_START.search(text) else text


def redact(text: str, secrets: Iterable[str] = (), command: Sequence[str] = (), *,
           cut: bool = False) -> str:
    """``text`` cleaned, with credentials replaced by ``[REDACTED]`` (see the module doc);
    withheld whole when ``command`` (the argv that printed it) prints Secrets in a format no
    rule can read (:func:`withholds`). Text with string escapes is read once more with them
    decoded; when that finds more, the decoded text is what is kept (fail closed). ``cut``:
    the text may end inside one of ``secrets`` (output cut at a bound or a deadline): a start
    of one (or of its forms) of ``_CUT_LEAST`` characters or more at its end is redacted."""
    return _redact(text, tuple(secrets), command, (False, False), cut)


def _redact(text: str, secrets: tuple[str, ...], command: Sequence[str],
            beyond: tuple[bool, bool], cut: bool = False) -> str:
    try:
        return _redacted(text, secrets, command, beyond, cut)
    finally:
        # what was read as a name may be a value (a table's cell): not kept past the text it
        # came from (the operator's process lives on, reading preview diffs)
        _credential_name.cache_clear()


def _redacted(text: str, secrets: tuple[str, ...], command: Sequence[str],
              beyond: tuple[bool, bool], cut: bool = False) -> str:
    if withholds(command) or (command and command[0] == "kubectl" and
                              _TEMPLATE_DUMP.search(text) is not None):
        return WITHHELD
    if secrets and _UNSHOWN_CHAR.search(text) is not None:
        # a known secret first, wherever it is: split across lines, one of them binary, the
        # rest of it would be left on the others once that line is redacted whole; with an
        # escape sequence inside, cleaning would take a character of it away
        text = _redact_known(text, secrets, cut, raw=True)
    text = _BINARY_LINE.sub(REDACTED, text)  # a binary file's bytes: a key, a keystore
    text = _redact_once(text, secrets, beyond, cut)
    read = text  # (each level decoded from the last: the redacted one, when it found more)
    for _ in range(_MAX_UNESCAPES):
        if "\\" not in read:
            break
        view = _unescape(read)
        if view == read:
            break
        again = _redact_once(view, secrets, beyond, cut)
        if again != clean(view):  # more found: kept (a deeper level may find more still)
            text = again
        read = again
    return text


# What :func:`redact_head` reads past what it shows: at least this many characters of the
# input other than whitespace (a known secret's longest form, six times its length, when
# longer) and these many
# lines (the rules that look ahead: an environment entry's name below its value, at most four
# lines down; ``kubectl describe``'s ``----``, one), so that what is shown is redacted as in
# the whole text. A ``[REDACTED]`` stands for one input character at least: ten output
# characters per input one are kept in hand.
_HEAD_MARGIN = 4096
_HEAD_LINES = 8
_HEAD_GROWTH = 4
_HEAD_ROUNDS = 2


def _safe_end(out: str, margin: int, last: bool) -> int:
    """How much of ``out`` (the redaction of a head) is followed by enough of it: the
    margin, in characters other than whitespace (a known secret is found across any), and the
    lines (on the ``last`` head read, the margin alone when its lines are longer than that:
    one line of megabytes)."""
    end, need = len(out), 10 * margin
    while need and end:
        end -= 1
        need -= not out[end].isspace()
    if need:
        return 0
    at = len(out)
    for _ in range(_HEAD_LINES):
        at = out.rfind("\n", 0, at)
        if at == -1:
            return max(0, end) if last else 0
    return max(0, min(end, at))


def redact_head(text: str, limit: int, secrets: Iterable[str] = (),
                command: Sequence[str] = ()) -> tuple[str, bool]:
    """(``text`` redacted and cut to ``limit`` UTF-8 bytes, truncated), reading only a head
    of a long text: what is shown is followed, in the head read, by at least
    ``_HEAD_MARGIN`` characters (more for a long known secret) and ``_HEAD_LINES`` lines, and
    whether the text past the head names a Secret counts as :func:`redact` would count it. A
    head that redaction shrinks below ``limit`` grows a few times; past that, less than
    ``limit`` is shown (never more than the whole text's redaction would)."""
    secrets = tuple(secrets)
    margin = max([_HEAD_MARGIN] + [6 * len(s) + 64 for s in secrets])
    size = 2 * (limit + 10 * margin)  # enough, in most text, for the first head to do
    # (past the first head: what the later, longer ones leave is less, never more)
    named = text.find("Secret", size) != -1
    beyond = (named and _SECRET_KIND.search(text, size) is not None, named)
    for round_ in range(_HEAD_ROUNDS + 1):
        if size >= len(text):
            break
        out = _redact(text[:size], secrets, command, beyond)
        if out == WITHHELD:
            return out, False
        shown = out[:_safe_end(out, margin, round_ == _HEAD_ROUNDS)]
        data = shown.encode("utf-8")
        if len(data) >= limit or round_ == _HEAD_ROUNDS:
            return data[:limit].decode("utf-8", errors="ignore"), True
        size *= _HEAD_GROWTH
    out = _redact(text, secrets, command, (False, False))
    data = out.encode("utf-8")
    if len(data) <= limit:
        return out, False
    return data[:limit].decode("utf-8", errors="ignore"), True


def output_sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _whole_characters(raw: bytes) -> bytes:
    """``raw`` without a UTF-8 character the output bound cut in two (not binary data)."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte < 0x80:
            return raw
        if byte >= 0xC0:  # the lead byte of the last character: is it whole?
            length = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return raw[:-back] if back < length else raw
    return raw


def bound_output(raw: bytes, *, limit: int, truncated: bool, secrets: Sequence[str] = (),
                 command: Sequence[str] = ()) -> tuple[str, bool, str]:
    """(redacted text of at most ``limit`` UTF-8 bytes, truncated, its ``sha256:<hex>``);
    ``command`` is the argv that printed ``raw`` (see :func:`redact`). ``raw`` may end inside
    one of ``secrets`` (cut at the bound, or where the command was killed at its deadline):
    a start of one at its end is redacted too."""
    if truncated:
        raw = _whole_characters(raw)
    text = redact(raw.decode("utf-8", errors="replace"), secrets, command, cut=True)
    data = text.encode("utf-8")
    if len(data) > limit:
        text = data[:limit].decode("utf-8", errors="ignore")
        truncated = True
    return text, truncated, output_sha256(text)


__all__ = ["REDACTED", "WITHHELD", "bound_output", "clean", "credential_name", "output_sha256",
           "redact", "redact_head", "withholds"]
