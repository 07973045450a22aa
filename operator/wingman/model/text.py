"""The characters the CRDs refuse in the text people and agents write into a spec.

Approvers read what a worker or another approver wrote (instructions, justifications,
commands, reasons, user names) in chat and in ``kubectl`` output, where a control character
or a bidirectional override can hide or reorder what is shown. The CRDs (``crds/``) refuse
such text at the API server, with CEL rules, for every client; the client refuses the same
before it calls, naming the character and where it is. Two classes, one per kind of field:

- prose (``spec.instruction``, ``spec.justification``, ``spec.source.excerpt``,
  ``spec.decisions[].reason``): C0 controls except tab and newline (a carriage return is
  refused), DEL, C1, the separators U+2028 and U+2029, and the bidirectional overrides and
  isolates U+202A-U+202E and U+2066-U+2069;
- one line (commands, rollbacks, user names, ``spec.source`` reference, agent and model):
  the same, tab and newline included.

``tests/unit/model/test_text.py`` checks these classes are exactly the CRDs' rules.
Pure: the standard library only.
"""

from __future__ import annotations

import re

#: What prose may not contain (the CRDs' rule for instruction, justification, excerpt, reason).
PROSE_REFUSED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: What a one-line field (a command, a user name) may not contain: the same, tab and newline too.
LINE_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _what(code: int) -> str:
    if code == 0x2028:
        return "the line separator"
    if code == 0x2029:
        return "the paragraph separator"
    if code > 0x9F:
        return "the bidirectional control"
    return "the control character"


def refusal(field: str, value: str, *, one_line: bool) -> str | None:
    """Why ``value`` may not be ``field`` (a sentence saying what to do), or None if it may."""
    found = (LINE_REFUSED if one_line else PROSE_REFUSED).search(value)
    if found is None:
        return None
    code = ord(found.group())
    where = f"{field} contains {_what(code)} U+{code:04X} at index {found.start()}"
    if one_line:
        return (f"{where}; it must be one line without tabs, newlines, other control "
                "characters, U+2028, U+2029 or bidirectional overrides and isolates (they can "
                "hide or reorder what approvers read): remove it")
    return (f"{where}; tab and newline are allowed, but other control characters (a carriage "
            "return too), U+2028, U+2029 and bidirectional overrides and isolates can hide or "
            "reorder what approvers read: remove it (to mention one, write it escaped, "
            "e.g. \\u202e)")
