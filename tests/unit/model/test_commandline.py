"""What a command line may hold at all: one rule for the scope check and the client."""

from __future__ import annotations

import pytest

from wingman import scope
from wingman.errors import ScopeViolation
from wingman.model import commandline, limits


@pytest.mark.parametrize(("command", "reason", "says"), [
    ("kubectl get pods\t-A", "ForbiddenCharacter",
     "the command contains the control character U+0009 at index 16; tabs, newlines, NUL and "
     "other control characters are not allowed: separate words with single spaces"),
    ("kubectl get pods\x85", "ForbiddenCharacter", "control character U+0085 at index 16"),
    ("kubectl get p\u043eds\t", "NonAsciiCharacter",  # the first of the two is named
     "the command contains the non-ASCII character U+043E at index 13; a command runs only in "
     "plain ASCII (look-alike, invisible and bidirectional characters are refused, not "
     "normalised): retype it in plain ASCII"),
    ("kubectl get pods \ud800", "NonAsciiCharacter", "U+D800 at index 17"),
    ("echo " + "a" * 4092, "CommandTooLong",
     "the command is 4,097 bytes of UTF-8 (4,097 characters); the limit is 4,096 bytes: split "
     "the work into smaller commands"),
    ("echo " + "\u00e9" * 2100, "CommandTooLong",
     f"the command is 4,205 bytes of UTF-8 (2,105 characters); the limit is 4,096 bytes: "
     f"{limits.COMMAND_BYTES_FIX}"),
])
def test_the_scope_check_refuses_in_the_shared_rules_words(command: str, reason: str,
                                                              says: str) -> None:
    with pytest.raises(ScopeViolation) as refused:
        scope.parse(command)
    assert refused.value.reason == reason
    assert says in refused.value.message, refused.value.message


def test_printable_ascii_within_the_bytes_passes() -> None:
    command = "kubectl get pods -l 'app in (a,b)' " + "~" * (4096 - 35)
    assert len(command) == limits.COMMAND_BYTES
    assert commandline.too_long("c", command) is None
    assert commandline.not_plain("c", command) is None
    assert commandline.not_plain("c", "".join(map(chr, range(0x20, 0x7F)))) is None
    assert commandline.not_plain("c", "\x7f") == (
        "ForbiddenCharacter", "c contains the control character U+007F at index 0; tabs, "
        "newlines, NUL and other control characters are not allowed: separate words with "
        "single spaces")
