"""The characters refused in spec text: the client's classes are exactly the CRDs' CEL rules,
and every free-text field of both CRDs' specs carries one of them.

An approver reads an instruction, a command or a reason in chat and in ``kubectl`` output; a
control character or a bidirectional override there can hide or reorder what is reviewed. The
API server refuses them for every client (``kubectl apply`` included, shown on a real API
server in tests/integration/test_crds.py); the client refuses the same before it calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from wingman.model.text import LINE_REFUSED, PROSE_REFUSED, refusal

CRDS = Path(__file__).resolve().parents[3] / "crds"
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
        differ = [hex(c) for c in range(0x110000)
                  if bool(theirs.search(chr(c))) != bool(ours.search(chr(c)))]
        assert not differ, f"{crd_class}: the client and the CRD disagree on {differ[:10]}"


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\r", "\x7f", "\x85", "\x9b",
                                  "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069"])
def test_controls_separators_and_bidi_overrides_are_refused_in_both_classes(char: str) -> None:
    for one_line in (True, False):
        why = refusal("spec.instruction", f"ok {char} ok", one_line=one_line)
        assert why is not None and f"U+{ord(char):04X} at index 3" in why
        assert why.startswith("spec.instruction contains") and "remove it" in why


def test_tab_and_newline_are_prose_but_not_one_line() -> None:
    prose = "Restart the web tier.\n\tIt serves the old certificate."
    assert refusal("spec.justification", prose, one_line=False) is None
    why = refusal("spec.commands[0]", "kubectl get pods\n-n apps", one_line=True)
    assert why is not None and "U+000A at index 16" in why and "one line" in why
    assert refusal("spec.commands[0]", "kubectl\tget", one_line=True) is not None


@pytest.mark.parametrize("ordinary", ["Redémarrer le service, s'il vous plaît",
                                      "Перезапустить веб", "שלום עולם", "重启前端 🚀",
                                      "a\u200db", "x" * 4096])
def test_ordinary_text_in_any_script_passes(ordinary: str) -> None:
    # letters of any script, right-to-left text itself, emoji and joiners are text, not controls
    assert refusal("spec.instruction", ordinary, one_line=False) is None
    assert refusal("spec.requester", ordinary, one_line=True) is None
