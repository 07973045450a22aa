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

The diff is a unified diff of the two objects as YAML (keys sorted), then redacted by the
gateway's output redaction (tokens, bearer credentials, key=value secrets and every string the
caller names, such as the preview's own ServiceAccount token), then cut to a byte limit.
Only what can be shown is redacted (a head of the diff, with a margin after it), so the diff
of a large object costs what its first kilobytes do.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
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


def _yaml(obj: Mapping[str, Any] | None) -> list[str]:
    if obj is None:
        return []
    text = yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=100,
                          allow_unicode=False)
    return text.splitlines()


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
    lines = difflib.unified_diff(_yaml(old), _yaml(new),
                                 fromfile=f"{label} (live)" if old is not None else "/dev/null",
                                 tofile=f"{label} (after)" if new is not None else "/dev/null",
                                 n=2, lineterm="")
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


__all__ = ["CHANGED", "CUT", "bounded", "clean", "object_diff"]
