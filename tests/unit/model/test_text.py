"""The characters refused in spec text: the client's classes are exactly the CRDs' CEL rules,
and every free-text field of both CRDs' specs carries one of them.

An approver reads an instruction, a command or a reason in chat and in ``kubectl`` output; a
control character, a bidirectional override or an invisible character there can hide or reorder
what is reviewed, or make two different user names look the same. The
API server refuses them for every client (``kubectl apply`` included, shown on a real API
server in tests/integration/test_crds.py); the client refuses the same before it calls.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from wingman.model.text import LINE_REFUSED, PROSE_KEPT, PROSE_REFUSED, refusal

CRDS = Path(__file__).resolve().parents[3] / "crds"
#: Lone surrogates: not Unicode scalar values, so never in text the API server decodes.
SURROGATES = range(0xD800, 0xE000)
#: CEL: ``!self.matches(r'<class>')`` or, for decisions, ``d.<field>.matches(r'<class>')``.
_MATCHES = re.compile(r"(?:self|d\.(by|reason))\.matches\(r'([^']*)'\)")

#: Every free-text string of the two specs and its class: True for one line, False for prose.
EXPECTED = {
    "ApprovalRequest": {
        "spec.requester": True, "spec.instruction": False, "spec.commands[]": True,
        "spec.rollbacks[].command": True, "spec.rollbacks[].rollback": True,
        "spec.justification": False, "spec.source.reference": True,
        "spec.source.agent": True, "spec.source.model": True, "spec.source.excerpt": False,
        "spec.decisions[].by": True, "spec.decisions[].reason": False,
    },
    "ExecutionGrant": {"spec.command": True, "spec.requester": True},
}


def _python(re2_class: str) -> re.Pattern[str]:
    """The CRD's RE2 class as a Python pattern (RE2 writes U+2028 as ``\\x{2028}``)."""
    return re.compile(re.sub(r"\\x\{([0-9A-Fa-f]+)\}", lambda m: chr(int(m.group(1), 16)),
                             re2_class))


def _walk(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def _text_rules() -> dict[str, dict[str, bool]]:
    """Per kind, each spec field a character rule guards and whether it is one line; and
    every spec string without an enum or a pattern must be among them."""
    found: dict[str, dict[str, bool]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        fields = found.setdefault(kind, {})
        for where, schema in _walk(spec, "spec"):
            for rule in schema.get("x-kubernetes-validations") or []:
                for sub, cls in _MATCHES.findall(rule["rule"]):
                    field = f"{where}[].{sub}" if sub else where
                    one_line = bool(_python(cls).search("\t"))  # the classes: see below
                    assert fields.setdefault(field, one_line) == one_line, (kind, field)
        free = {where for where, schema in _walk(spec, "spec") if schema.get("type") == "string"
                and "enum" not in schema and "pattern" not in schema}
        assert free <= set(fields), f"{kind}: free text without a character rule: " \
            f"{sorted(free - set(fields))}"
    return found


def test_every_free_text_spec_field_is_guarded_with_its_class() -> None:
    assert _text_rules() == EXPECTED


def test_the_client_refuses_exactly_the_characters_the_crds_refuse() -> None:
    crd_classes: set[str] = set()
    for path in CRDS.glob("*.yaml"):
        crd_classes |= {cls for _, cls in _MATCHES.findall(path.read_text())}
    assert len(crd_classes) == 2, crd_classes  # one line, and prose
    line, prose = sorted(crd_classes, key=lambda c: not _python(c).search("\t"))
    for crd_class, ours in ((line, LINE_REFUSED), (prose, PROSE_REFUSED)):
        theirs = _python(crd_class)
        differ = [hex(c) for c in range(0x110000) if c not in SURROGATES
                  and bool(theirs.search(chr(c))) != bool(ours.search(chr(c)))]
        assert not differ, f"{crd_class}: the client and the CRD disagree on {differ[:10]}"
        # the API server's JSON decoding makes each lone surrogate U+FFFD before any rule
        # runs, so the CRDs never see one; the client refuses them all, or what it sent and
        # audited would not be what was stored
        assert all(ours.search(chr(c)) for c in SURROGATES)
        assert not theirs.search("\ufffd") and not ours.search("\ufffd")
    # prose: runs of the characters it keeps (joiners, marks, variation selectors)
    theirs = _python(prose)
    kept = [chr(c) for c in range(0x110000) if PROSE_KEPT.search(chr(c))]
    ends = [k for i, k in enumerate(kept) if i in (0, len(kept) - 1)
            or ord(kept[i - 1]) + 1 != ord(k) or ord(kept[i + 1]) - 1 != ord(k)]
    runs = [a + b for a in kept for b in kept] + [a + b + c for a in ends for b in ends
                                                  for c in ends]
    differ = [r for r in runs if bool(theirs.search(r)) != bool(PROSE_REFUSED.search(r))]
    assert not differ, f"the client and the CRD disagree on runs {differ[:5]}"
    assert all(bool(PROSE_REFUSED.search(r)) == (len(r) == 3) for r in runs)


#: Format characters (Unicode category Cf) that render visibly, so neither class refuses them:
#: the Arabic, Syriac, Kaithi and Egyptian number and layout signs shown as marks of their own.
VISIBLE_FORMAT = {*range(0x600, 0x606), 0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0x110BD, 0x110CD,
                  *range(0x13430, 0x13456)}


def test_every_invisible_format_character_is_refused_in_one_line_fields() -> None:
    # what renders as nothing cannot be compared by eye: every format character (zero-width,
    # joiners, bidi controls and marks, BOM, invisible operators, tags) is refused, and the
    # rest of the class is controls and fillers
    missed = [hex(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"
              and c not in VISIBLE_FORMAT and not LINE_REFUSED.search(chr(c))]
    assert not missed, f"format characters a one-line field accepts: {missed}"
    for filler in "\u115f\u1160\u3164\uffa0\u034f\xad":  # invisible, though not Cf
        assert LINE_REFUSED.search(filler) and PROSE_REFUSED.search(filler), hex(ord(filler))


def test_prose_keeps_exactly_tab_newline_joiners_marks_and_variation_selectors() -> None:
    kept = [c for c in range(0x110000)
            if LINE_REFUSED.search(chr(c)) and not PROSE_REFUSED.search(chr(c))]
    assert kept == [0x9, 0xA] + [c for c in range(0x110000) if PROSE_KEPT.search(chr(c))]
    assert [f"{c:04X}" for c in kept if not 0xFE00 <= c <= 0xE01EF] == [
        "0009", "000A", "061C", "180B", "180C", "180D", "180F", "200C", "200D", "200E", "200F"]
    assert not any(PROSE_REFUSED.search(chr(c)) and not LINE_REFUSED.search(chr(c))
                   for c in range(0x110000)), "prose refuses nothing a one-line field accepts"


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\r", "\x7f", "\x85", "\x9b",
                                  "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069"])
def test_controls_separators_and_bidi_overrides_are_refused_in_both_classes(char: str) -> None:
    for one_line in (True, False):
        why = refusal("spec.instruction", f"ok {char} ok", one_line=one_line)
        assert why is not None and f"U+{ord(char):04X} at index 3" in why
        assert why.startswith("spec.instruction contains") and "remove it" in why


@pytest.mark.parametrize("char", [
    "\u200b", "\u2060", "\u2061", "\u2064", "\ufeff", "\xad", "\u034f", "\u180e",
    "\u3164", "\uffa0", "\u115f", "\u17b4", "\ufff9", "\U000e0001", "\U000e0041",
    "\U000e007f", "\U0001d173"])
def test_invisible_characters_are_refused_in_both_classes(char: str) -> None:
    for one_line in (True, False):
        why = refusal("spec.justification", f"ok {char} ok", one_line=one_line)
        assert why is not None and f"U+{ord(char):04X} at index 3" in why, why
        assert "invisible" in why and "remove it" in why


def test_a_name_with_a_zero_width_space_is_not_the_name_it_looks_like() -> None:
    why = refusal("spec.requester", "al\u200bice", one_line=True)
    assert why == ("spec.requester contains the invisible character U+200B at index 2; it must "
                   "be one line without tabs, newlines, other control characters, U+2028, "
                   "U+2029, bidirectional controls or invisible characters (zero-width spaces "
                   "and joiners, soft hyphens, variation selectors, tags: they can hide or "
                   "reorder what approvers read, or make two different names look the same): "
                   "remove it")
    tagged = refusal("spec.instruction", "ok\U000e0069\U000e0067", one_line=False)
    assert tagged is not None and tagged.startswith(
        "spec.instruction contains the invisible tag character U+E0069 at index 2")


@pytest.mark.parametrize("char", ["\u200c", "\u200d", "\u200e", "\u200f", "\u061c", "\ufe0f",
                                  "\ufe00", "\U000e0100", "\u180b"])
def test_joiners_marks_and_variation_selectors_are_prose_but_not_one_line(char: str) -> None:
    assert refusal("spec.reason", f"ok {char}ok", one_line=False) is None
    why = refusal("spec.requester", f"ok {char}ok", one_line=True)
    assert why is not None and f"U+{ord(char):04X} at index 3" in why
    if char in "\u200e\u200f\u061c":
        assert "the bidirectional mark" in why


def test_three_joiners_marks_or_variation_selectors_in_a_row_are_refused_in_prose() -> None:
    # a byte per variation selector after one emoji: shown as the emoji alone
    hidden = "\U0001f600\U000e0100\U000e0101\ufe0f"
    why = refusal("spec.source.excerpt", f"see {hidden}", one_line=False)
    assert why == ("spec.source.excerpt contains three invisible characters in a row (U+E0100 "
                   "U+E0101 U+FE0F) at index 5; joiners, bidirectional marks and variation "
                   "selectors are allowed in prose, at most two together (as in an emoji "
                   "sequence), since a longer run shows as nothing and can carry hidden text: "
                   "remove them")
    assert refusal("spec.instruction", "a\u200c\u200d\u200cb", one_line=False) is not None
    assert refusal("spec.instruction", "a\u200f\u200e\u200fb", one_line=False) is not None
    # two in a row is what emoji need (U+FE0F U+200D in a rainbow flag); apart, any number
    flag = "\U0001f3f3\ufe0f\u200d\U0001f308"
    assert refusal("spec.instruction", flag * 3, one_line=False) is None
    assert refusal("spec.instruction", "a\u200cb\u200cc\u200cd", one_line=False) is None


def test_tab_and_newline_are_prose_but_not_one_line() -> None:
    prose = "Restart the web tier.\n\tIt serves the old certificate."
    assert refusal("spec.justification", prose, one_line=False) is None
    why = refusal("spec.commands[0]", "kubectl get pods\n-n apps", one_line=True)
    assert why is not None and "U+000A at index 16" in why and "one line" in why
    assert refusal("spec.commands[0]", "kubectl\tget", one_line=True) is not None


@pytest.mark.parametrize("ordinary", ["Redémarrer le service, s'il vous plaît",
                                      "Перезапустить веб", "שלום עולם", "重启前端 🚀",
                                      "x" * 4096])
def test_ordinary_text_in_any_script_passes(ordinary: str) -> None:
    # letters of any script, right-to-left text itself and emoji are text, not controls
    assert refusal("spec.instruction", ordinary, one_line=False) is None
    assert refusal("spec.requester", ordinary, one_line=True) is None


@pytest.mark.parametrize("prose", [
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: a ZWNJ is spelling
    "\u0915\u094d\u200d\u0937",  # Devanagari: a ZWJ picks the half form
    "\u05d4\u05e4\u05e2\u05dc kubectl\u200f.",  # Hebrew: an RLM puts the full stop right
    "\u0627\u0644\u062e\u0627\u062f\u0645 2\u061c-3",  # Arabic: ALM keeps the numbers apart
    "\U0001f469\u200d\U0001f4bb \u2764\ufe0f \U0001f3f3\ufe0f\u200d\U0001f308",  # emoji sequences
    "\u845b\U000e0100",  # an ideographic variation sequence
    "\U0001f3f3\ufe0f\u200d\U0001f308",  # a rainbow flag: two in a row
])
def test_prose_keeps_what_scripts_and_emoji_need(prose: str) -> None:
    assert refusal("spec.instruction", prose, one_line=False) is None


@pytest.mark.parametrize("char", ["\ud800", "\udbff", "\udc00", "\udfff"])
def test_a_lone_surrogate_is_refused_in_both_classes_as_what_it_is(char: str) -> None:
    for one_line in (True, False):
        why = refusal("the reason", f"ok {char} ok", one_line=one_line)
        assert why is not None and why.startswith(
            f"the reason contains the lone surrogate U+{ord(char):04X} at index 3: half of a "
            "UTF-16 pair")
        assert "remove it" in why
    assert refusal("the reason", "\U0001f600", one_line=False) is None  # a whole pair's char
