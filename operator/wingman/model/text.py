"""The characters the CRDs refuse in the text people and agents write into a spec.

Approvers read what a worker or another approver wrote (instructions, justifications,
commands, reasons, user names) in chat and in ``kubectl`` output, where a control character,
a bidirectional override or an invisible character can hide or reorder what is shown, or make
two different strings look the same (``alice`` and ``al\\u200bice``). The CRDs (``crds/``)
refuse such text at the API server, with CEL rules, for every client; the client refuses the
same before it calls, naming the character and where it is. Two classes, one per kind of field:

- one line (commands, rollbacks, user names, ``spec.source`` reference, agent and model):
  C0 controls (tab and newline too), DEL, C1, the separators U+2028 and U+2029, every
  bidirectional control (the overrides and isolates U+202A-U+202E and U+2066-U+2069, the marks
  U+200E, U+200F and U+061C), Unicode's default-ignorable code points (zero-width space,
  joiners, word joiner, BOM, soft hyphen, invisible operators, Hangul fillers, variation
  selectors, tags: what a renderer shows as nothing) and the interlinear annotation controls
  U+FFF9-U+FFFB. An identifier is text people compare by eye: nothing in it may be invisible
  (as in Unicode's identifier profile, UTS #39).
- prose (``spec.instruction``, ``spec.justification``, ``spec.source.excerpt``,
  ``spec.decisions[].reason``): the same except tab and newline and what writing needs
  (``PROSE_KEPT``): the joiners U+200C and U+200D (Persian, Indic scripts, emoji sequences),
  the bidirectional marks U+200E, U+200F and U+061C (punctuation and numbers in Arabic and
  Hebrew text; a mark cannot reorder words, an override can) and the variation selectors
  (emoji presentation, ideographic variants, Mongolian). Tags (U+E0000-U+E007F: an invisible
  copy of ASCII that a model reads and a person does not) are refused there too, and so are
  three kept characters in a row: no writing needs more than two (U+FE0F U+200D in an emoji
  sequence), and a run shows as nothing however long it is, so it could carry hidden text (a
  byte per variation selector after one emoji).

Both classes also refuse lone surrogates (U+D800-U+DFFF): halves of a UTF-16 pair, not
characters, which JSON escapes (``\\ud800``) and Python strings can hold but UTF-8 cannot: the
audit trail could not record them, and the API server's JSON decoding replaces each with U+FFFD
(so a CRD rule never sees one, and what was stored would not be what was sent or audited).

``tests/unit/model/test_text.py`` checks these classes are exactly the CRDs' rules, code
point by code point (surrogates aside). Pure: the standard library only.
"""

from __future__ import annotations

import re

#: Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 16): characters
#: a renderer shows as nothing. The bidirectional controls U+202A-U+202E, U+2066-U+2069,
#: U+200E, U+200F and U+061C are among them.
_IGNORABLE = ("\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
              "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
              "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff")
#: What renders as nothing (``_IGNORABLE``): removed before text is matched against patterns
#: (``wingman.review.injection``), so a joiner prose keeps cannot split a phrase it looks for.
IGNORABLE = re.compile(f"[{_IGNORABLE}]")
#: Ignorable in a one-line field, kept in prose: joiners, bidirectional marks, variation
#: selectors (the Mongolian ones, the basic ones and the ideographic supplement).
PROSE_KEPT = re.compile("[\u061c\u180b-\u180d\u180f\u200c-\u200f\ufe00-\ufe0f"
                        "\U000e0100-\U000e01ef]")
#: Lone surrogates: not characters, no UTF-8 encoding.
_SURROGATES = "\ud800-\udfff"
#: What a one-line field (a command, a user name) may not contain.
LINE_REFUSED = re.compile(
    f"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufff9-\ufffb{_SURROGATES}{_IGNORABLE}]")
#: What prose may not contain (the CRDs' rule for instruction, justification, excerpt, reason):
#: a character of the one-line class but tab, newline and ``PROSE_KEPT``, or three of
#: ``PROSE_KEPT`` in a row.
_PROSE_CLASS = (
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u034f\u115f\u1160\u17b4\u17b5\u180e\u200b\u2028-\u202e"
    "\u2060-\u206f\u3164\ufeff\uffa0\ufff0-\ufffb\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    f"{_SURROGATES}\U000e0000-\U000e00ff\U000e01f0-\U000e0fff]")
PROSE_REFUSED = re.compile(f"{_PROSE_CLASS}|{PROSE_KEPT.pattern}{{3}}")
#: A character no spec text may hold (tab and newline aside): what a display of text that
#: was never checked (a status message, an object stored before these rules) shows escaped.
UNSHOWN = re.compile(_PROSE_CLASS)


#: What a terminal would act on or hide instead of showing: C0 and C1 controls, the
#: bidirectional controls that reorder what is shown ("Trojan Source") and marks, and what no
#: spec text may hold because it renders as nothing (zero-width space, BOM, tags, fillers:
#: ``wingman.model.text.UNSHOWN``), which a status message or an older object may still hold.
_UNSHOWABLE = re.compile(f"[\u061c\u200e\u200f]|{UNSHOWN.pattern}")


def terminal_text(value: object, indent: str | None = "    ") -> str:
    """``value`` as text safe for a terminal: what the agent, a voter or a command wrote
    reaches an approver's screen, and must neither hide nor fake what is reviewed. Control
    characters are shown escaped (``\\x1b``); a newline starts a line ``indent`` deep (so it
    cannot fake a field), or is shown escaped too when ``indent`` is None."""
    text = _UNSHOWABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), str(value))
    text = text.replace("\t", "    ")
    return text.replace("\n", "\\n") if indent is None else text.replace("\n", "\n" + indent)


def _what(code: int) -> str:
    if code == 0x2028:
        return "the line separator"
    if code == 0x2029:
        return "the paragraph separator"
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return "the bidirectional control"
    if code in (0x200E, 0x200F, 0x061C):
        return "the bidirectional mark"
    if 0xE0000 <= code <= 0xE007F:
        return "the invisible tag character"
    if code > 0x9F:
        return "the invisible character"
    return "the control character"


def refusal(field: str, value: str, *, one_line: bool) -> str | None:
    """Why ``value`` may not be ``field`` (a sentence saying what to do), or None if it may."""
    found = (LINE_REFUSED if one_line else PROSE_REFUSED).search(value)
    if found is None:
        return None
    if len(found.group()) > 1:
        run = " ".join(f"U+{ord(c):04X}" for c in found.group())
        return (f"{field} contains three invisible characters in a row ({run}) at index "
                f"{found.start()}; joiners, bidirectional marks and variation selectors are "
                "allowed in prose, at most two together (as in an emoji sequence), since a "
                "longer run shows as nothing and can carry hidden text: remove them")
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        return (f"{field} contains the lone surrogate U+{code:04X} at index {found.start()}: "
                "half of a UTF-16 pair, not a character, so it cannot be stored (Kubernetes "
                "and the audit trail take UTF-8 text); remove it, or send the whole character")
    where = f"{field} contains {_what(code)} U+{code:04X} at index {found.start()}"
    if one_line:
        return (f"{where}; it must be one line without tabs, newlines, other control "
                "characters, U+2028, U+2029, bidirectional controls or invisible characters "
                "(zero-width spaces and joiners, soft hyphens, variation selectors, tags: they "
                "can hide or reorder what approvers read, or make two different names look "
                "the same): remove it")
    return (f"{where}; tab and newline are allowed, and so are the joiners U+200C and U+200D, "
            "the marks U+200E, U+200F and U+061C and variation selectors (at most two in a row), "
            "but other control characters (a carriage return too), U+2028, U+2029, "
            "bidirectional overrides and isolates and invisible characters (zero-width space, "
            "word joiner, BOM, soft hyphen, tags) can hide or reorder what approvers read: "
            "remove it (to mention one, write it escaped, e.g. \\u202e)")
