"""What the client relies on in the ApprovalRequests and ExecutionGrants it reads.

The client reads objects as the API server answers them: their ``metadata.name`` and ``uid``,
their ``spec`` and the ``status`` the operator writes, each field of the type the CRDs give
it. An answer of another shape (a proxy or another service at the API server's address, a
broken API server, CRDs changed by hand) would otherwise fail deep inside the client with a
``KeyError`` or a ``TypeError``, which the CLI would report as a crash. :func:`checked` looks
at every object once, where the client receives it, and fails such an answer as
``UnusableAnswer`` (no answer it can use, a ``ClusterError`` every caller handles), saying
which field is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from wingman.kube import Keep, UnusableAnswer

#: Fields every object the client reads holds (the API server sets them), as text.
_REQUIRED_META = ("name", "uid")

#: (path, type): the fields the client reads, when present and not null, and their types.
#: ``[]`` is every element of a list.
_COMMON: tuple[tuple[str, type], ...] = (
    ("metadata", dict), ("metadata.namespace", str), ("metadata.creationTimestamp", str),
    ("metadata.resourceVersion", str),
    ("spec", dict), ("status", dict), ("status.phase", str),
)
_REQUEST: tuple[tuple[str, type], ...] = (
    *_COMMON,
    ("spec.requester", str), ("spec.environment", str), ("spec.instruction", str),
    ("spec.justification", str), ("spec.commands", list), ("spec.commands[]", str),
    ("spec.decisions", list), ("spec.decisions[]", dict), ("spec.rollbacks", list),
    ("spec.rollbacks[]", dict), ("spec.source", dict),
    ("status.expirationTime", str), ("status.conditions", list), ("status.conditions[]", dict),
    ("status.decision", dict), ("status.decision.approvedBy", list),
    ("status.decision.requiredApprovals", int), ("status.grants", list),
    ("status.grants[]", dict), ("status.consensus", dict), ("status.consensus.votes", list),
    ("status.consensus.votes[]", dict), ("status.consensus.flags", list),
    ("status.consensus.dissent", list), ("status.consensus.approvals", int),
    ("status.consensus.rejections", int), ("status.consensus.abstentions", int),
    ("status.preview", dict),
)
_GRANT: tuple[tuple[str, type], ...] = (
    *_COMMON,
    ("spec.approvalRef", dict), ("spec.approvalRef.name", str), ("spec.command", str),
    ("spec.requester", str), ("spec.rollbackOf", dict), ("spec.rollbackOf.name", str),
    ("status.output", str),
)
_FIELDS = {"ApprovalRequest": _REQUEST, "ExecutionGrant": _GRANT}
_TYPE_NAMES = {dict: "an object", list: "a list", str: "text", int: "an integer"}


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    for typ, name in ((bool, "a boolean"), (dict, "an object"), (list, "a list"),
                      (str, "text"), (int, "an integer"), (float, "a number")):
        if isinstance(value, typ):
            return name
    return type(value).__name__


def _is(value: object, typ: type) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _values(obj: object, path: str) -> list[tuple[str, object]]:
    """(the field's path with indices, its value) for each value at ``path`` in ``obj`` whose
    parents are of the right type (they are checked first)."""
    found: list[tuple[str, object]] = [("", obj)]
    for part in path.split("."):
        each = part.endswith("[]")
        key = part.removesuffix("[]")
        below: list[tuple[str, object]] = []
        for where, value in found:
            if not isinstance(value, Mapping) or value.get(key) is None:
                continue
            inner, field = value[key], f"{where}.{key}" if where else key
            if each:
                if isinstance(inner, list):
                    below += [(f"{field}[{i}]", v) for i, v in enumerate(inner)]
            else:
                below.append((field, inner))
        found = below
    return found


def problem(obj: object, kind: str, meta: tuple[str, ...] = ()) -> str | None:
    """What is wrong with ``obj`` as a ``kind`` the API server answered, or None. ``meta``:
    fields of ``metadata`` the caller needs besides the name and the uid."""
    if not isinstance(obj, Mapping):
        return f"it is {_kind_of(obj)}, not an object"
    for path, typ in _FIELDS[kind]:
        for field, value in _values(obj, path):
            if not _is(value, typ):
                return f"{field} is {_kind_of(value)}, not {_TYPE_NAMES[typ]}"
    held = obj.get("metadata") or {}
    for key in (*_REQUIRED_META, *meta):
        if not held.get(key):
            return f"metadata.{key} is missing or empty"
    if obj.get("spec") is None:
        return "spec is missing"
    return None


def checked(obj: Any, kind: str, meta: tuple[str, ...] = ()) -> dict[str, Any]:
    """``obj``, a ``kind`` the API server answered, if it has the shape the client relies on
    (and the fields of ``metadata`` in ``meta``); else ``UnusableAnswer`` saying what is
    wrong."""
    why = problem(obj, kind, meta)
    if why is not None:
        name = ""
        if isinstance(obj, Mapping) and isinstance(obj.get("metadata"), Mapping):
            given = obj["metadata"].get("name")
            name = f" {given[:60]!r}" if isinstance(given, str) and given else ""
        raise UnusableAnswer(
            f"the API server answered with an {kind}{name} Wingman cannot read: {why}. "
            "No API server with Wingman's CRDs answers so: check that the address "
            "is the API server's (not a proxy or another service), that it is healthy, and "
            "that Wingman's CRDs are the ones its chart installs")
    result: dict[str, Any] = obj
    return result


def picking(kind: str, keep: Callable[[dict[str, Any]], bool] | None = None) -> Keep:
    """A ``Kube.list`` keep of the ``kind`` objects ``keep`` keeps (all without it), each
    checked before ``keep`` looks at it."""
    def pick(o: dict[str, Any]) -> dict[str, Any] | None:
        item = checked(o, kind)
        return item if keep is None or keep(item) else None
    return pick


__all__ = ["checked", "picking", "problem"]
