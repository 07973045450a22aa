"""What would change, as text people and voters read: a bounded, redacted diff (pure).

Both sides of a write (the live object before, the dry run's result after) are cleaned the same
way before they are compared:

- bookkeeping the server changes on every write is dropped (``metadata.managedFields``,
  ``resourceVersion``, ``generation``, ``creationTimestamp``, ``uid``, ``selfLink``), and so is
  ``status`` unless the write is to the status subresource itself (status races with the
  controllers and is not what a command changes);
- the ``kubectl.kubernetes.io/last-applied-configuration`` annotation is dropped (it repeats the
  object, Secrets included);
- a Secret's ``data`` and ``stringData`` values are never shown: each value becomes
  ``[REDACTED]``, and a value the write changes ``[REDACTED] (changed)`` on the after side, so
  reviewers see which keys are added, removed or changed and never a value. A write can also
  move or copy a value elsewhere in the Secret (a JSON patch ``copy`` from ``/data/password``
  to an annotation), so every occurrence of any of its values, base64 or decoded, is redacted
  from the Secret's whole diff as well.

The diff is a unified diff of the two objects as YAML (keys sorted, two lines of context),
then redacted by the gateway's output redaction (tokens, bearer credentials, key=value secrets
and every string the caller names, such as the preview's own ServiceAccount token), then cut
to a byte limit. Only what can be shown is redacted (a head of the diff, with a margin after
it), so the diff of a large object costs what its first kilobytes do.

A large object with a small change costs what the change does: the two objects are compared as
trees first, and a run of keys equal on both sides that adds up to ``UNCHANGED_BYTES`` or more
is written as one line, ``# ... N unchanged keys (about K KiB)`` (an equal item as large,
``- # ... unchanged (about K KiB)``), unless it holds the word ``Secret`` (the redaction reads
the whole text for a Secret's kind); ``apiVersion`` and ``kind`` are always written. Objects of
ordinary size are diffed as before. The work left is bounded: what is still larger than
``MAX_DIFF_SIZE`` is not written out but summed up (``! too large to diff line by line``, with
the paths that change), and lines past the common head and tail that are more than half
``MAX_ALIGN_LINES`` on a side are lined up up to there and shown as removed then added past it
(``! too many changes to line up``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import re
import secrets as _random
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from wingman.gateway.redaction import REDACTED, redact_head

_DROP_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid",
              "selfLink")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_SECRET_FIELDS = ("data", "stringData")
CHANGED = "[REDACTED] (changed)"
CUT = "! the diff is longer: cut here"
UNCHANGED_BYTES = 16 * 1024
"""An unchanged run of keys (or an unchanged item) this large, about, is one line."""
MAX_DIFF_SIZE = 2 << 20
"""Objects still larger than this, about, once unchanged runs are one line: a summary."""
MAX_ALIGN_LINES = 5_000
"""Changed lines (past the common head and tail) beyond this are not lined up."""
_CONTEXT = 2
_MAX_PATHS = 20
_LEAD = re.compile(r"^ *(?:- )*")
_KIND_KEYS = ("apiVersion", "kind")


def clean(obj: Mapping[str, Any] | None, *, keep_status: bool = False) -> dict[str, Any] | None:
    """A copy of ``obj`` without the fields a write changes by itself (see the module doc)."""
    if obj is None:
        return None
    out = copy.deepcopy(dict(obj))
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in _DROP_META:
            meta.pop(key, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(_LAST_APPLIED, None)
            if not annotations:
                meta.pop("annotations", None)
    if not keep_status:
        out.pop("status", None)
    return out


def _mask_secrets(before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """Replace Secret values in place on both sides, marking the keys whose value differs."""
    sides = [s for s in (before, after) if s is not None]
    if not any(s.get("kind") == "Secret" for s in sides):
        return
    for field in _SECRET_FIELDS:
        old = before.get(field) if before is not None else None
        new = after.get(field) if after is not None else None
        old_map = old if isinstance(old, dict) else {}
        if before is not None and isinstance(old, dict):
            before[field] = dict.fromkeys(old, REDACTED)
        if after is not None and isinstance(new, dict):
            after[field] = {k: REDACTED if k not in old_map or old_map[k] == v else CHANGED
                            for k, v in new.items()}
        for side, value in ((before, old), (after, new)):
            if side is not None and value is not None and not isinstance(value, dict):
                side[field] = REDACTED


def _secret_values(*sides: Mapping[str, Any] | None) -> list[str]:
    """Every value a Secret side holds in ``data`` (base64 and decoded) or ``stringData``."""
    values: list[str] = []
    for side in sides:
        if side is None or side.get("kind") != "Secret":
            continue
        for field in _SECRET_FIELDS:
            entries = side.get(field)
            if not isinstance(entries, Mapping):
                continue
            for value in entries.values():
                if not isinstance(value, str) or not value:
                    continue
                values.append(value)
                if field == "data":
                    try:
                        decoded = base64.b64decode(value, validate=True).decode("utf-8")
                    except (binascii.Error, ValueError):
                        continue
                    if decoded:
                        values.append(decoded)
    return values


def _weigh(obj: Any) -> tuple[int, bool]:
    """About how many bytes ``obj`` takes as YAML, and whether a key or string in it holds the
    word ``Secret``."""
    size, named = 0, False
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            size += len(item) + 4
            named = named or "Secret" in item
        elif isinstance(item, dict):
            size += 2
            for key, value in item.items():
                stack.append(key)
                stack.append(value)
        elif isinstance(item, list):
            size += 2
            stack.extend(item)
        else:
            size += 8
    return size, named


def _pointer(path: str, key: object) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


class _Pruner:
    """Both sides with their large unchanged parts replaced by placeholders (see the module
    doc), and the paths where they differ (the first ``_MAX_PATHS``, and how many)."""

    def __init__(self) -> None:
        self.token = f"wingman-unchanged-{_random.token_hex(8)}-"
        self.notes: dict[str, str] = {}
        self.paths: list[str] = []
        self.changes = 0

    def _changed(self, path: str) -> None:
        self.changes += 1
        if len(self.paths) < _MAX_PATHS:
            self.paths.append(path or "/")

    def _mark(self, note: str) -> str:
        mark = f"{self.token}{len(self.notes)}"
        self.notes[mark] = note
        return mark

    def prune(self, old: Any, new: Any, path: str = "") -> tuple[Any, Any]:
        if isinstance(old, dict) and isinstance(new, dict) \
                and all(isinstance(k, str) for k in (*old, *new)):
            return self._mapping(old, new, path)
        if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
            out_old, out_new = [], []
            for index, (a, b) in enumerate(zip(old, new, strict=True)):
                if a == b:
                    size, named = _weigh(a)
                    if size >= UNCHANGED_BYTES and not named:
                        a = b = self._mark(f"# ... unchanged (about {size >> 10} KiB)")
                else:
                    a, b = self.prune(a, b, _pointer(path, index))
                out_old.append(a)
                out_new.append(b)
            return out_old, out_new
        self._changed(path)
        return old, new

    def _mapping(self, old: dict[str, Any], new: dict[str, Any],
                 path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        out_old: dict[str, Any] = {}
        out_new: dict[str, Any] = {}
        run: list[str] = []

        def flush() -> None:
            # the placeholder takes the run's first key (where YAML's sorting puts the run),
            # one written on one line
            start = next((i for i, k in enumerate(run) if len(k) <= 64 and k.isprintable()),
                         len(run))
            size, named = 0, False
            for key in run[start:]:
                weight, names = _weigh(old[key])
                size, named = size + weight + len(key), named or names or "Secret" in key
            if start < len(run) and size >= UNCHANGED_BYTES and not named:
                count = len(run) - start
                note = f"# ... {count} unchanged key{'s' if count > 1 else ''} " \
                       f"(about {size >> 10} KiB)"
                kept = run[:start]
                out_old[run[start]] = out_new[run[start]] = self._mark(note)
            else:
                kept = run
            for key in kept:
                out_old[key] = out_new[key] = old[key]
            run.clear()

        for key in sorted(old.keys() | new.keys()):
            if key in old and key in new:
                same = old[key] == new[key]
                if same and (path or key not in _KIND_KEYS):
                    run.append(key)
                    continue
                if same:  # the kind stays (the redaction reads it)
                    flush()
                    out_old[key] = out_new[key] = old[key]
                    continue
                flush()
                out_old[key], out_new[key] = self.prune(old[key], new[key], _pointer(path, key))
                continue
            flush()
            self._changed(_pointer(path, key))
            if key in old:
                out_old[key] = old[key]
            else:
                out_new[key] = new[key]
        flush()
        return out_old, out_new

    def restore(self, lines: list[str]) -> list[str]:
        """The dumped lines with each placeholder's line made its note."""
        if not self.notes:
            return lines
        out = []
        for line in lines:
            at = line.find(self.token)
            if at != -1:
                mark = line[at:].split(None, 1)[0]
                note = self.notes.get(mark)
                if note is not None:
                    lead = _LEAD.match(line)
                    line = (lead.group(0) if lead else "") + note
            out.append(line)
        return out


def _yaml(obj: Mapping[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    text = yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=100,
                          allow_unicode=False)
    return text.splitlines()


def _range(start: int, stop: int) -> str:
    """A hunk's range as ``difflib.unified_diff`` writes it."""
    length = stop - start
    beginning = start + 1 if length else start
    return str(beginning) if length == 1 else f"{beginning},{length}"


def _unified(a: list[str], b: list[str], fromfile: str, tofile: str) -> list[str]:
    """``difflib.unified_diff(a, b, n=2)``; past ``MAX_ALIGN_LINES`` lines, only the lines
    between the common head and tail are lined up, and of those only the first
    ``MAX_ALIGN_LINES / 2`` of each side (a note says so)."""
    if len(a) + len(b) <= MAX_ALIGN_LINES:
        return list(difflib.unified_diff(a, b, fromfile=fromfile, tofile=tofile, n=_CONTEXT,
                                         lineterm=""))
    head = 0
    while head < len(a) and head < len(b) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < len(a) - head and tail < len(b) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    end_a, end_b = len(a) - tail, len(b) - tail
    codes: list[tuple[str, int, int, int, int]] = [("equal", 0, head, 0, head)] if head else []
    # the lines between are lined up up to a bound (quadratic at worst), the rest is shown as
    # removed then added: only the diff's head is ever shown
    width = MAX_ALIGN_LINES // 2
    stop_a, stop_b = min(end_a, head + width), min(end_b, head + width)
    matcher = difflib.SequenceMatcher(None, a[head:stop_a], b[head:stop_b])
    codes += [(tag, i1 + head, i2 + head, j1 + head, j2 + head)
              for tag, i1, i2, j1, j2 in matcher.get_opcodes()]
    note = ""
    if stop_a < end_a or stop_b < end_b:
        note = f"! too many changes to line up: past line {stop_a + 1}, {end_a - stop_a} " \
               f"lines are shown as removed, then {end_b - stop_b} added"
        if stop_a < end_a:
            codes.append(("delete", stop_a, end_a, stop_b, stop_b))
        if stop_b < end_b:
            codes.append(("insert", end_a, end_a, stop_b, end_b))
    if tail:
        codes.append(("equal", end_a, len(a), end_b, len(b)))
    grouper: difflib.SequenceMatcher[str] = difflib.SequenceMatcher(None, [], [])
    grouper.opcodes = codes  # type: ignore[attr-defined]
    out = [f"--- {fromfile}", f"+++ {tofile}"] + ([note] if note else [])
    for group in grouper.get_grouped_opcodes(_CONTEXT):
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(" " + line for line in a[i1:i2])
                continue
            if tag in ("replace", "delete"):
                out.extend("-" + line for line in a[i1:i2])
            if tag in ("replace", "insert"):
                out.extend("+" + line for line in b[j1:j2])
    return out


def object_diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *,
                label: str, keep_status: bool = False, limit: int = 1 << 20) -> str:
    """The unified diff between two versions of one object (None: absent); '' when equal. A
    Secret's diff is redacted and cut to ``limit`` UTF-8 bytes (a last line says so)."""
    old = clean(before, keep_status=keep_status)
    new = clean(after, keep_status=keep_status)
    hidden = _secret_values(old, new)
    _mask_secrets(old, new)
    if old == new:
        return ""
    fromfile = f"{label} (live)" if old is not None else "/dev/null"
    tofile = f"{label} (after)" if new is not None else "/dev/null"
    pruner = _Pruner()
    if old is not None and new is not None:
        old, new = pruner.prune(old, new)
    size = max(_weigh(old)[0], _weigh(new)[0])
    if size > MAX_DIFF_SIZE:
        paths = ", ".join(pruner.paths) + (", ..." if pruner.changes > len(pruner.paths)
                                           else "")
        lines = [f"--- {fromfile}", f"+++ {tofile}",
                 f"! too large to diff line by line (about {size >> 20} MiB): "
                 + (f"{pruner.changes} changed at {paths}" if pruner.changes
                    else "created" if old is None else "deleted")]
    else:
        lines = _unified(pruner.restore(_yaml(old)), pruner.restore(_yaml(new)),
                         fromfile, tofile)
    text = "\n".join(lines) + "\n"
    if not hidden:
        return text
    shown, cut = redact_head(text, limit, hidden)
    return f"{shown}\n{CUT}\n" if cut else shown


def bounded(text: str, limit: int, secrets: Iterable[str] = ()) -> tuple[str, bool]:
    """``text`` redacted and cut to ``limit`` UTF-8 bytes: (text, truncated). Only what can
    be shown is redacted (a head of a long text, with enough after it to redact it as in the
    whole: ``redact_head``), so a diff of megabytes costs what its first kilobytes do."""
    return redact_head(text, limit, secrets)


__all__ = ["CHANGED", "CUT", "MAX_ALIGN_LINES", "MAX_DIFF_SIZE", "UNCHANGED_BYTES", "bounded",
           "clean", "object_diff"]
