"""What a command line may hold at all: the first rules of the operator's scope check.

The scope check (``wingman.scope``, rules 1 to 3) refuses a command, a rollback or an
allowlist pattern of more than ``limits.COMMAND_BYTES`` bytes of UTF-8, and one holding any
character that is not printable ASCII: a control character (C0, tab and newline too, DEL, C1)
or any character above U+007F (look-alikes, invisible and bidirectional characters, a
non-breaking space), never normalised. The CRD stores such a command all the same, which would
then be reviewed and could never run, so the client refuses it before any call. Both apply the
rules from here, with the same words; each names what it checked (``the command``,
``commands[0]``, ``--rollback``) and raises its own error with the reason it documents.

Pure: the standard library and ``wingman.model.limits``.
"""

from __future__ import annotations

import re

from wingman.model import limits

#: The first character that is not printable ASCII (U+0020 to U+007E).
_NOT_PLAIN = re.compile("[^\x20-\x7e]")


def too_long(what: str, command: str) -> str | None:
    """Why ``command`` (named ``what``) can never run: it is more than
    ``limits.COMMAND_BYTES`` bytes of UTF-8 (rule 1), saying what to do; None when it fits."""
    fix = ("split the work into smaller commands" if command.isascii()
           else limits.COMMAND_BYTES_FIX)
    return limits.too_many_bytes(what, command, limits.COMMAND_BYTES, fix)


def not_plain(what: str, command: str) -> tuple[str, str] | None:
    """(reason, why) ``command`` (named ``what``) can never run, for its first character that is
    not printable ASCII: ``ForbiddenCharacter`` for a control character (rule 2),
    ``NonAsciiCharacter`` for any other above U+007F (rule 3), naming the code point and its
    index; None when every character is printable ASCII."""
    found = _NOT_PLAIN.search(command)
    if found is None:
        return None
    index, code = found.start(), ord(found.group())
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return ("ForbiddenCharacter",
                f"{what} contains the control character U+{code:04X} at index {index}; tabs, "
                "newlines, NUL and other control characters are not allowed: separate words "
                "with single spaces")
    return ("NonAsciiCharacter",
            f"{what} contains the non-ASCII character U+{code:04X} at index {index}; a command "
            "runs only in plain ASCII (look-alike, invisible and bidirectional characters are "
            "refused, not normalised): retype it in plain ASCII")


__all__ = ["not_plain", "too_long"]
