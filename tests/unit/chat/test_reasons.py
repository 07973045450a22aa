"""Every reason a chat refusal can give (the answer, the ChatRefused record and the
wingman_chat_refusals_total label) is explained in docs/chat.md's table of refusals."""

from __future__ import annotations

import re
from pathlib import Path

import wingman.chat

CHAT_DOC = Path(__file__).resolve().parents[3] / "docs" / "chat.md"


def test_every_refusal_reason_has_a_row_in_the_chat_docs() -> None:
    code = "\n".join(p.read_text() for p in Path(wingman.chat.__file__).parent.glob("*.py"))
    given = set(re.findall(r"\brefuse\(\s*\"([A-Za-z]+)\"", code))
    table = CHAT_DOC.read_text().split("\n| Reason | When |\n", 1)[1].split("\n\n", 1)[0]
    documented = {name for row in table.splitlines()[1:]
                  for name in re.findall(r"`([A-Za-z]+)`", row.split(" | ", 1)[0])}
    assert "StepUpFailed" in given and "AmbiguousCommand" in given, sorted(given)
    assert given - documented == set(), "refused so, but not in docs/chat.md's table"
    assert documented - given == set(), "in docs/chat.md's table, but no longer a reason"
