"""Every audit event the operator, the gateway and the chat component write has a row in
docs/audit.md's "What is recorded" tables, and every row names an event the code writes.

The events are found in the source: the first argument of an audit call (``audit``,
``_audit``, ``_audit_quietly``, ``audit_unit``'s tuples, a sink's ``append(event, actor=...)``),
the ``audit_event`` of an ApprovalRequest transition, and a record tuple
``("Event", subject_of(...), {...})``. An event built from an f-string
(``f"Grant{phase}"``) matches the documented events it can spell."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGE = REPO / "operator" / "wingman"
AUDIT_DOC = REPO / "docs" / "audit.md"
WRITERS = ("operator", "gateway", "chat")
CALLS = {"audit", "_audit", "_audit_quietly"}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _pattern(node: ast.expr) -> str | None:
    """A regular expression of the event names ``node`` can spell (None: not a string)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(re.escape(str(value.value)))
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.IfExp) \
                    and all(isinstance(b, ast.Constant) for b in (value.value.body,
                                                                  value.value.orelse)):
                branches = (value.value.body, value.value.orelse)
                parts.append("(?:" + "|".join(re.escape(str(b.value))  # type: ignore[attr-defined]
                                              for b in branches) + ")")
            else:
                parts.append("[A-Z][A-Za-z]*")
        return "".join(parts)
    return None


def _record_tuple(node: ast.expr) -> str | None:
    if isinstance(node, ast.Tuple) and len(node.elts) == 3 \
            and isinstance(node.elts[1], ast.Call) and _name(node.elts[1].func) == "subject_of":
        return _pattern(node.elts[0])
    return None


def _assigned(function: ast.AST) -> dict[str, list[str]]:
    """The strings each local name of ``function`` is given (``a, b = "X", "Y"`` too)."""
    names: dict[str, list[str]] = {}
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = (zip(target.elts, node.value.elts, strict=False)
                     if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                     else [(target, node.value)])
            for name, value in pairs:
                pattern = _pattern(value)
                if isinstance(name, ast.Name) and pattern:
                    names.setdefault(name.id, []).append(pattern)
    return names


def written_events() -> dict[str, str]:
    """The pattern of each event the code writes, with where it is written."""
    found: dict[str, str] = {}
    for top in WRITERS:
        for path in sorted((PACKAGE / top).rglob("*.py")):
            tree = ast.parse(path.read_text())
            functions = [n for n in ast.walk(tree)
                         if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            for function in functions:
                local = _assigned(function)
                for node in ast.walk(function):
                    where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                    for pattern in _events_at(node, local):
                        found.setdefault(pattern, where)
    return found


def _resolved(node: ast.expr, local: dict[str, list[str]]) -> list[str]:
    if isinstance(node, ast.Name):
        return local.get(node.id, [])
    pattern = _pattern(node)
    return [pattern] if pattern else []


def _events_at(node: ast.AST, local: dict[str, list[str]]) -> Iterator[str]:
    if isinstance(node, ast.Tuple):
        pattern = _record_tuple(node)
        if pattern:
            yield pattern
    if not isinstance(node, ast.Call):
        return
    name = _name(node.func)
    first = node.args[0] if node.args and not isinstance(node.args[0], ast.Starred) else None
    if first is not None and (name in CALLS or (
            name == "append" and any(k.arg == "actor" for k in node.keywords))):
        yield from _resolved(first, local)
    if name == "Transition":
        event = node.args[5] if len(node.args) > 5 else next(
            (k.value for k in node.keywords if k.arg == "audit_event"), None)
        if event is not None:
            yield from _resolved(event, local)


def documented_events() -> set[str]:
    """The events of the tables of docs/audit.md's "What is recorded" (a row may name two)."""
    section = AUDIT_DOC.read_text().split("\n## What is recorded\n", 1)[1].split("\n## ", 1)[0]
    events: set[str] = set()
    for row in re.findall(r"^\| (`[A-Z][A-Za-z]+`(?:, `[A-Z][A-Za-z]+`)*) \|", section, re.M):
        events.update(re.findall(r"`([A-Z][A-Za-z]+)`", row))
    return events


def test_every_written_event_is_documented_and_every_documented_one_written() -> None:
    written = written_events()
    documented = documented_events()
    assert len(written) > 20 and len(documented) > 20
    undocumented = {f"{pattern} ({where})" for pattern, where in written.items()
                    if not any(re.fullmatch(pattern, event) for event in documented)}
    assert not undocumented, "written but not in docs/audit.md's tables"
    unwritten = {event for event in documented
                 if not any(re.fullmatch(pattern, event) for pattern in written)}
    assert not unwritten, "in docs/audit.md's tables, but written by no code"
