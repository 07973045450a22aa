"""A check of a whole value is anchored at its very end: in Python's ``re``, ``$`` also
matches just before a newline that ends the text, so ``re.match(r"^[a-z]+$", "abc\\n")``
accepts a value with a line break (into a label, a header, a file). Whole values are checked
with ``fullmatch`` (or ``\\Z``); a ``$`` is left only in patterns that find things in text."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import wingman

PACKAGE = Path(wingman.__file__).resolve().parent

#: Patterns ending in '$' that are used with .match/.search to FIND things in text (lines,
#: words, a value's end), not to accept a whole value: file (under wingman/) and name -> why.
ALLOWED = {
    "gateway/redaction.py:_PLACEHOLDER": "whether a value in a line of output is kubectl's "
    "<none>/<unset> placeholder up to the end of its line, which it says with (?:\\n|$)",
    "gateway/redaction.py:_SEQUENCE_FLAG": "finds a flag alone on one line of output (a YAML "
    "sequence item), whose value is on the next line",
    "gateway/redaction.py:_YAML_KEY": "reads 'key: value' from one line of output",
    "gateway/redaction.py:_WRAPPED_ABOVE": "finds a wrapped base64 line just above a position "
    "in output",
    "gateway/redaction.py:_SSH_PUBLIC_KEY": "finds an SSH key type just before a position in "
    "output",
    "gateway/redaction.py:_FLOW_REST": "finds where a YAML flow value ends in a line of output",
    "gateway/redaction.py:_ITEM_END": "finds where a JSON array's string item ends on a line of "
    "output (before ',' or ']', or at the line's end)",
    "gateway/redaction.py:_ALIAS": "reads a YAML alias (*name) from a value on one line of "
    "output",
    "gateway/redaction.py:_ENV_VALUE": "finds 'value: ...' in one line of output",
}

# an escape or a character class: a '$' in one is a plain character
_CLASS = re.compile(r"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]")


def _ends_in_dollar(pattern: str) -> bool:
    """Whether a '$' (neither escaped nor in a class) ends the pattern or an alternative."""
    return re.search(r"\$\)*(?:\||\Z)", _CLASS.sub("_", pattern)) is not None


def _compiled(tree: ast.AST) -> Iterator[tuple[str, str, int]]:
    """(name, pattern, line) of each ``NAME = re.compile("literal", ...)``."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute)
                and node.value.func.attr == "compile" and node.value.args):
            continue
        try:
            pattern = ast.literal_eval(node.value.args[0])
        except ValueError:
            continue
        for target in node.targets:
            name = target.id if isinstance(target, ast.Name) else (
                target.attr if isinstance(target, ast.Attribute) else None)
            if name is not None and isinstance(pattern, str):
                yield name, pattern, node.lineno


def _uses(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(name, line) of each ``NAME.match(...)``/``NAME.search(...)``, also ``self.NAME``;
    ``re.match("literal...", ...)`` as the literal itself."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("match", "search")):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id == "re" and node.args:
            try:
                literal = ast.literal_eval(node.args[0])
            except ValueError:
                continue
            if isinstance(literal, str) and _ends_in_dollar(literal):
                yield f"re.{node.func.attr}({literal!r})", node.lineno
        elif isinstance(owner, ast.Name):
            yield owner.id, node.lineno
        elif isinstance(owner, ast.Attribute):
            yield owner.attr, node.lineno


def _found() -> list[str]:
    """The uses of anchored patterns not in ALLOWED, and ALLOWED entries no longer used so."""
    found, allowed = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(PACKAGE).as_posix()
        anchored = {name: line for name, pattern, line in _compiled(tree)
                    if _ends_in_dollar(pattern)}
        for name, line in _uses(tree):
            if name in anchored and f"{where}:{name}" in ALLOWED:
                allowed.add(f"{where}:{name}")
            elif name.startswith("re.") or name in anchored:
                found.append(f"wingman/{where}:{line}: {name}")
    found.sort(key=lambda f: (f.split(":")[0], int(f.split(":")[1])))
    return found + [f"wingman/{entry}: in ALLOWED, but no longer a pattern ending in '$' used "
                    "with .match/.search" for entry in sorted(set(ALLOWED) - allowed)]


def test_a_pattern_ending_in_dollar_does_not_check_a_whole_value() -> None:
    found = _found()
    assert found == [], (
        "'$' also matches before a final newline: check a whole value with .fullmatch (the "
        "pattern's '$' dropped) or end the pattern at \\Z; a pattern that finds things in "
        "text goes in ALLOWED with the reason:\n" + "\n".join(found))


@pytest.mark.parametrize(("pattern", "anchored"), [
    (r"^[a-z]+$", True), (r"^a$|^b", True), (r"(?:a|$)", True), (r"a(?:,|$)", True),
    (r"[a-z]+", False), (r"^[a-z]+\Z", False), (r"price \$", False), (r"[$]", False),
    (r"[^$]+", False), (r"[\]$]x", False), (r"(?:$)x", False),
])
def test_the_scan_sees_a_dollar_only_where_it_ends_a_pattern(pattern: str,
                                                             anchored: bool) -> None:
    assert _ends_in_dollar(pattern) is anchored
