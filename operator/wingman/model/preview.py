"""The preview of an ApprovalRequest: what its commands would change, as everyone reads it.

A preview Job (``wingman preview``) runs each command of a request as a server-side dry run
before the panel votes and reports, per command, the target objects (API group, version,
resource, kind, namespace, name, uid, resourceVersion, generation) and a bounded, redacted
diff. The Job hands its result to the operator through its pod's termination message
(:func:`encode` / :func:`decode`: compressed JSON, at most :data:`MAX_MESSAGE_BYTES`, the
kubelet's limit); the operator validates it (:func:`Preview.from_dict`, strict and bounded) and
records it in ``status.preview``, where only the operator writes. The gateway reads the same
record at execution and compares each target with the live object (:func:`drift`): an approval
covers the objects and versions its preview saw.

The version a target is bound to (:func:`bound_version`) is its ``metadata.generation`` when
the object has one (it changes with the spec, not with status updates) and its
``resourceVersion`` otherwise; a different uid (deleted and recreated), a deleted target and a
target that did not exist at preview time but exists now are changes too.

Pure: the standard library only.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wingman.model import names

MAX_MESSAGE_BYTES = 4096
"""A container's termination message is cut by the kubelet at 4096 bytes."""
MESSAGE_PREFIX = "wingman-preview/v1:"
MAX_DECODED_BYTES = 256 * 1024
"""Decompression stops here: a result that inflates further is refused, not trusted."""
MAX_COMMANDS = 10
MAX_TARGETS = 20
"""Targets recorded per command; more are counted (``targetsTruncated``), not listed."""
MAX_DIFF_BYTES = 4096
MAX_MESSAGE_CHARS = 1024
MAX_COMMAND_CHARS = 4096


class Outcome(enum.StrEnum):
    """What the preview of one command found."""

    PREVIEWED = "Previewed"  # the server accepted the dry run; targets and diff recorded
    READ_ONLY = "ReadOnly"  # the command only reads: nothing would change
    NOT_PREVIEWABLE = "NotPreviewable"  # the preview cannot run it (a finding)
    TARGET_MISSING = "TargetMissing"  # an object the command names does not exist
    FORBIDDEN = "Forbidden"  # the API server refused the dry run (RBAC or admission)
    INVALID = "Invalid"  # the API server rejected the change as invalid (or a conflict)
    FAILED = "Failed"  # anything else went wrong (the message says what)
    TIMED_OUT = "TimedOut"  # the dry run did not finish in time

    @property
    def finding(self) -> bool:
        """Whether reviewers must be told: the preview could not show a clean change."""
        return self not in (Outcome.PREVIEWED, Outcome.READ_ONLY)


class Phase(enum.StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"  # a result was recorded (it may hold findings)
    FAILED = "Failed"  # the preview Job produced no usable result


class Action(enum.StrEnum):
    CREATE = "Create"
    UPDATE = "Update"
    DELETE = "Delete"


#: An object's name and its namespace's, as the API server checks them (an RFC 1123 subdomain,
#: a label): ``a..b`` or ``a.-b`` is no name, a namespace holds no '.'
_NAME = names.OBJECT_NAME
_NAMESPACE = names.NAMESPACE_NAME
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
#: The names the API server takes as a path segment instead of a DNS subdomain: RBAC's roles
#: and bindings (``system:aggregate-to-admin``, ``system:controller:job-controller``). The API
#: server refuses only '/', '%', '.' and '..'; here, printable ASCII without those (no space,
#: no control or bidirectional character in a name a reviewer reads).
_PATH_SEGMENT = re.compile(r"(?!\.\.?$)[!-$&-.0-~]{1,253}")
_PATH_SEGMENT_GROUPS = frozenset({"rbac.authorization.k8s.io"})
_GROUP = names.OBJECT_NAME  # an API group is a subdomain too ('' for the core group)
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class PreviewInvalid(ValueError):
    """A preview result that does not have the documented shape (never recorded)."""


def _text(data: Mapping[str, Any], key: str, limit: int, *, required: bool = True,
          pattern: re.Pattern[str] | None = None, empty: bool = True) -> str:
    """A bounded string field; ``empty``: may be ''; ``pattern`` applies to non-empty text."""
    value = data.get(key)
    if value is None:
        if required:
            raise PreviewInvalid(f"{key} is missing")
        return ""
    if not isinstance(value, str):
        raise PreviewInvalid(f"{key} must be a string")
    if len(value) > limit:
        raise PreviewInvalid(f"{key} is longer than {limit} characters")
    if not value:
        if not empty:
            raise PreviewInvalid(f"{key} must not be empty")
        return value
    if pattern is not None and not pattern.fullmatch(value):
        raise PreviewInvalid(f"{key} {value[:60]!r} has an invalid form")
    return value


def _integer(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise PreviewInvalid(f"{key} must be a non-negative integer")
    return value


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise PreviewInvalid(f"{key} must be true or false")
    return value


@dataclass(frozen=True)
class Target:
    """One object a command would write, as the preview saw it before the change.

    ``exists`` is False for an object the command would create (it has no uid or version
    yet). Containers (docker commands) have group ``docker``, resource ``containers`` and the
    container id as uid.
    """

    group: str
    version: str
    resource: str
    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    generation: int | None = None
    exists: bool = True
    action: Action = Action.UPDATE

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def ref(self) -> str:
        """``deployments.apps apps/web`` (for messages)."""
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{res} {where}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "version": self.version,
                               "resource": self.resource, "kind": self.kind, "name": self.name,
                               "exists": self.exists, "action": self.action.value}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.uid:
            out["uid"] = self.uid
        if self.resource_version:
            out["resourceVersion"] = self.resource_version
        if self.generation is not None:
            out["generation"] = self.generation
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Target:
        if not isinstance(data, Mapping):
            raise PreviewInvalid("a target must be a mapping")
        group = _text(data, "group", 253, pattern=_GROUP)
        name_pattern = (_CONTAINER if group == "docker" else
                        _PATH_SEGMENT if group in _PATH_SEGMENT_GROUPS else _NAME)
        action = data.get("action", Action.UPDATE.value)
        try:
            act = Action(action)
        except ValueError:
            raise PreviewInvalid(f"action must be one of {', '.join(Action)}") from None
        return cls(
            group=group,
            version=_text(data, "version", 63, pattern=_WORD, empty=False),
            resource=_text(data, "resource", 253, pattern=_WORD, empty=False),
            kind=_text(data, "kind", 253, pattern=_WORD, empty=False),
            name=_text(data, "name", 253, pattern=name_pattern, empty=False),
            namespace=_text(data, "namespace", 63, required=False, pattern=_NAMESPACE),
            uid=_text(data, "uid", 128, required=False, pattern=_VERSION),
            resource_version=_text(data, "resourceVersion", 128, required=False,
                                   pattern=_VERSION),
            generation=_integer(data, "generation"),
            exists=_flag(data, "exists") if "exists" in data else True,
            action=act,
        )


@dataclass(frozen=True)
class CommandPreview:
    """The preview of one command of the request."""

    command: str
    executor: str
    outcome: Outcome
    message: str = ""
    targets: tuple[Target, ...] = ()
    targets_truncated: int = 0  # targets seen but not listed (beyond MAX_TARGETS)
    diff: str = ""
    diff_truncated: bool = False

    @property
    def finding(self) -> bool:
        return self.outcome.finding

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command, "executor": self.executor,
                               "outcome": self.outcome.value, "message": self.message,
                               "targets": [t.to_dict() for t in self.targets]}
        if self.targets_truncated:
            out["targetsTruncated"] = self.targets_truncated
        if self.diff:
            out["diff"] = self.diff
        if self.diff_truncated:
            out["diffTruncated"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CommandPreview:
        if not isinstance(data, Mapping):
            raise PreviewInvalid("a command preview must be a mapping")
        try:
            outcome = Outcome(str(data.get("outcome")))
        except ValueError:
            raise PreviewInvalid(f"outcome must be one of {', '.join(Outcome)}") from None
        targets = data.get("targets") or []
        if not isinstance(targets, list) or len(targets) > MAX_TARGETS:
            raise PreviewInvalid(f"targets must be a list of at most {MAX_TARGETS}")
        diff = _text(data, "diff", MAX_DIFF_BYTES, required=False)
        if len(diff.encode("utf-8")) > MAX_DIFF_BYTES:
            raise PreviewInvalid(f"diff is longer than {MAX_DIFF_BYTES} bytes")
        executor = _text(data, "executor", 32)
        if executor not in ("kubernetes", "docker", ""):
            raise PreviewInvalid("executor must be kubernetes or docker")
        return cls(
            command=_text(data, "command", MAX_COMMAND_CHARS, empty=False),
            executor=executor,
            outcome=outcome,
            message=_text(data, "message", MAX_MESSAGE_CHARS, required=False),
            targets=tuple(Target.from_dict(t) for t in targets),
            targets_truncated=_integer(data, "targetsTruncated") or 0,
            diff=diff,
            diff_truncated=_flag(data, "diffTruncated"),
        )


@dataclass(frozen=True)
class Summary:
    """The reach of a preview: how many objects, of which kinds, in which namespaces."""

    objects: int
    kinds: tuple[str, ...]
    namespaces: tuple[str, ...]
    findings: int

    def to_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "kinds": list(self.kinds),
                "namespaces": list(self.namespaces), "findings": self.findings}


@dataclass(frozen=True)
class Preview:
    """The result a preview Job reports for one ApprovalRequest (bound to its uid)."""

    approval_uid: str
    commands: tuple[CommandPreview, ...] = ()
    message: str = ""

    @property
    def findings(self) -> list[CommandPreview]:
        return [c for c in self.commands if c.finding]

    def summary(self) -> Summary:
        objects: set[tuple[str, str, str, str]] = set()
        kinds: dict[str, None] = {}
        spaces: dict[str, None] = {}
        extra = 0
        for c in self.commands:
            extra += c.targets_truncated
            for t in c.targets:
                objects.add((t.group, t.resource, t.namespace, t.name))
                kinds[t.kind] = None
                if t.namespace:
                    spaces[t.namespace] = None
        return Summary(len(objects) + extra, tuple(sorted(kinds)), tuple(sorted(spaces)),
                       len(self.findings))

    def for_command(self, command: str) -> CommandPreview | None:
        return next((c for c in self.commands if c.command == command), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"approvalUID": self.approval_uid,
                               "commands": [c.to_dict() for c in self.commands]}
        if self.message:
            out["message"] = self.message
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Preview:
        if not isinstance(data, Mapping):
            raise PreviewInvalid("a preview must be a mapping")
        commands = data.get("commands") or []
        if not isinstance(commands, list) or len(commands) > MAX_COMMANDS:
            raise PreviewInvalid(f"commands must be a list of at most {MAX_COMMANDS}")
        return cls(approval_uid=_text(data, "approvalUID", 128, pattern=_VERSION, empty=False),
                   commands=tuple(CommandPreview.from_dict(c) for c in commands),
                   message=_text(data, "message", MAX_MESSAGE_CHARS, required=False))


# --------------------------------------------------------------------------- the channel


def encode(preview: Preview) -> str:
    """The termination message: prefix + base64(zlib(JSON)). May exceed the limit: the runner
    shrinks the preview (:func:`fit`) until it does not."""
    raw = json.dumps(preview.to_dict(), separators=(",", ":"), sort_keys=True).encode("utf-8")
    return MESSAGE_PREFIX + base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode(message: str) -> Preview:
    """The preview a termination message carries; PreviewInvalid if it is not one."""
    if not isinstance(message, str) or not message.startswith(MESSAGE_PREFIX):
        raise PreviewInvalid("the termination message is not a Wingman preview result")
    if len(message) > MAX_MESSAGE_BYTES:
        raise PreviewInvalid(f"the preview result is longer than {MAX_MESSAGE_BYTES} bytes")
    try:
        packed = base64.b64decode(message[len(MESSAGE_PREFIX):], validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_DECODED_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            raise PreviewInvalid("the preview result is truncated or inflates beyond "
                                 f"{MAX_DECODED_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, PreviewInvalid):
            raise
        raise PreviewInvalid(f"the preview result cannot be decoded ({type(exc).__name__})"
                             ) from None
    return Preview.from_dict(data)


def _shrunk(c: CommandPreview, diff_limit: int, target_limit: int) -> CommandPreview:
    diff, cut = c.diff, c.diff_truncated
    data = diff.encode("utf-8")
    if len(data) > diff_limit:
        diff, cut = data[:diff_limit].decode("utf-8", errors="ignore"), True
    targets = c.targets[:target_limit]
    return CommandPreview(c.command, c.executor, c.outcome, c.message[:MAX_MESSAGE_CHARS],
                          targets, c.targets_truncated + len(c.targets) - len(targets),
                          diff, cut)


def fit(preview: Preview, limit: int = MAX_MESSAGE_BYTES) -> tuple[Preview, str]:
    """The largest form of ``preview`` whose encoding fits ``limit``: diffs are cut first,
    then targets beyond the first few, then messages; (preview, encoded). A message past
    ``MAX_MESSAGE_CHARS`` (a problem quoting what answered at the API server's address) is cut
    to it, as the reader of the result accepts no longer one."""
    message = preview.message[:MAX_MESSAGE_CHARS]
    for diff_limit in (MAX_DIFF_BYTES, 2048, 1024, 512, 256, 0):
        for target_limit in (MAX_TARGETS, 10, 5, 2):
            if target_limit < MAX_TARGETS and diff_limit > 0:
                continue  # cut the diffs away before dropping targets
            smaller = Preview(preview.approval_uid,
                              tuple(_shrunk(c, diff_limit, target_limit)
                                    for c in preview.commands), message)
            encoded = encode(smaller)
            if len(encoded) <= limit:
                return smaller, encoded
    bare = Preview(preview.approval_uid, tuple(
        CommandPreview(c.command, c.executor, c.outcome, c.message[:120], (),
                       c.targets_truncated + len(c.targets), "", bool(c.diff))
        for c in preview.commands), preview.message[:120])
    return bare, encode(bare)


# --------------------------------------------------------------------------- the status


def status_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``status.preview`` of an ApprovalRequest ({} when absent)."""
    value = (body.get("status") or {}).get("preview")
    return value if isinstance(value, Mapping) else {}


def recorded(body: Mapping[str, Any]) -> Preview | None:
    """The completed preview the operator recorded for this approval, or None."""
    data = status_of(body)
    if data.get("phase") != Phase.COMPLETED.value:
        return None
    uid = str((body.get("metadata") or {}).get("uid") or "")
    try:
        preview = Preview.from_dict({"approvalUID": uid, "commands": data.get("commands"),
                                     "message": data.get("message", "")})
    except PreviewInvalid:
        return None
    return preview


def status(preview: Preview, *, job: str, started: str, completed: str) -> dict[str, Any]:
    """``status.preview`` for a completed preview (the operator writes it)."""
    summary = preview.summary()
    out: dict[str, Any] = {
        "phase": Phase.COMPLETED.value, "jobName": job, "startTime": started,
        "completionTime": completed,
        "commands": [c.to_dict() for c in preview.commands],
        "summary": summary.to_dict(),
    }
    if preview.message:
        out["message"] = preview.message
    return out


def describe_findings(preview: Preview) -> str:
    """One line per finding, for conditions, Events and voters."""
    lines = []
    for i, c in enumerate(preview.commands, 1):
        if c.finding:
            lines.append(f"command {i}: {c.outcome.value}: {c.message or 'no detail'}")
    return "; ".join(lines)


# --------------------------------------------------------------------------- for people


def summary_lines(data: Mapping[str, Any]) -> list[str]:
    """A recorded ``status.preview`` in a few lines for people (CLI, chat): the reach, then
    each command's outcome and targets (or its finding). Text in it came from the cluster and
    the request: callers show it as literal text."""
    if not isinstance(data, Mapping) or not data:
        return []
    phase = str(data.get("phase") or "?")
    if phase != Phase.COMPLETED.value:
        note = str(data.get("message") or "")
        return [f"{phase}" + (f": {note}" if note else "")]
    summary = data.get("summary") or {}
    kinds = ", ".join(str(k) for k in summary.get("kinds") or [])
    spaces = ", ".join(str(n) for n in summary.get("namespaces") or [])
    findings = int(summary.get("findings") or 0)
    lines = [f"{summary.get('objects', 0)} object(s) would change"
             + (f" ({kinds})" if kinds else "") + (f" in {spaces}" if spaces else "")
             + (f"; {findings} finding(s)" if findings else "")]
    for i, c in enumerate(data.get("commands") or [], 1):
        if not isinstance(c, Mapping):
            continue
        outcome = str(c.get("outcome") or "?")
        targets = [t for t in c.get("targets") or [] if isinstance(t, Mapping)]
        if outcome == Outcome.PREVIEWED.value and targets:
            shown = "; ".join(
                f"{t.get('action', 'Update')} {t.get('kind')} "
                f"{str(t.get('namespace')) + '/' if t.get('namespace') else ''}{t.get('name')}"
                + (f" (generation {t.get('generation')})" if t.get("generation") is not None
                   else "")
                for t in targets[:5])
            more = int(c.get("targetsTruncated") or 0) + max(0, len(targets) - 5)
            lines.append(f"{i}. {outcome}: {shown}" + (f" and {more} more" if more else ""))
        else:
            lines.append(f"{i}. {outcome}: {str(c.get('message') or '')[:300]}")
    return lines


# --------------------------------------------------------------------------- binding


def bound_version(obj_or_target: Mapping[str, Any] | Target) -> str:
    """``generation:<n>`` when the object has a generation, else ``resourceVersion:<rv>``."""
    if isinstance(obj_or_target, Target):
        gen, rv = obj_or_target.generation, obj_or_target.resource_version
    else:
        meta = obj_or_target.get("metadata") or {}
        raw = meta.get("generation")
        gen = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
        rv = str(meta.get("resourceVersion") or "")
    return f"generation:{gen}" if gen is not None else f"resourceVersion:{rv}"


_VERSION_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


SHORT_ID_CHARS = 12
"""The shortest start of a container's ID taken for it (``docker ps`` shows 12 characters)."""


def container_named(state: Mapping[str, Any], name: str) -> bool:
    """Whether the container the Docker engine found for ``name`` (``state``, as ``docker
    inspect`` describes it) is the one ``name`` names: the container of that exact name, or
    whose ID is ``name`` or starts with it (at least :data:`SHORT_ID_CHARS` characters). The
    engine also takes a name no container has as the start of any container's ID: ``docker
    restart db`` (or ``cafe``), once no container is called so, would reach another container,
    which nobody reviewed."""
    found = str(state.get("Name") or "")
    cid = str(state.get("Id") or "")
    return found == f"/{name}" or (len(name) >= SHORT_ID_CHARS and cid.startswith(name))


def container_identity(state: Mapping[str, Any]) -> dict[str, Any]:
    """A container as ``docker inspect`` describes it, in the shape :func:`drift` compares:
    its id is the uid, its start time the version (a restart or a new container is a
    change)."""
    st = state.get("State") or {}
    started = _VERSION_UNSAFE.sub("", str(st.get("StartedAt") or ""))[:128]
    return {"metadata": {"uid": str(state.get("Id") or "")[:128],
                         "resourceVersion": started or str(st.get("Status") or "unknown")}}


def target_path(target: Target) -> str:
    """The API path of a target (Kubernetes targets only)."""
    from urllib.parse import quote

    base = f"/apis/{target.group}/{target.version}" if target.group else f"/api/{target.version}"
    where = f"/namespaces/{quote(target.namespace, safe='')}" if target.namespace else ""
    return f"{base}{where}/{target.resource}/{quote(target.name, safe='')}"


@dataclass(frozen=True)
class Change:
    """How a target differs from what its preview saw."""

    target: Target
    what: str

    def describe(self) -> str:
        return f"{self.target.ref} {self.what}"


def drift(target: Target, live: Mapping[str, Any] | None) -> Change | None:
    """How ``live`` (None: the object does not exist) differs from the previewed ``target``;
    None when it is the same object at the same version."""
    if not target.exists:
        if live is None:
            return None
        return Change(target, "did not exist when the preview ran and exists now")
    if live is None:
        return Change(target, f"was deleted (the preview saw uid {target.uid})")
    meta = live.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    if uid != target.uid:
        return Change(target, f"was replaced: uid {uid or '?'} is not the previewed "
                              f"{target.uid}")
    before, now = bound_version(target), bound_version(live)
    if target.generation is None and not target.resource_version:
        return Change(target, "has no recorded version to compare")
    if before.split(":", 1)[0] != now.split(":", 1)[0]:
        # the object gained or lost a generation: compare resourceVersions
        before = f"resourceVersion:{target.resource_version}"
        now = f"resourceVersion:{meta.get('resourceVersion') or ''}"
    if before != now:
        return Change(target, f"changed since the preview ({before} then, {now} now)")
    return None


def changes(pairs: Iterable[tuple[Target, Mapping[str, Any] | None]]) -> list[Change]:
    return [c for t, live in pairs if (c := drift(t, live)) is not None]


@dataclass(frozen=True)
class BindingPlan:
    """What the gateway must compare before it executes ``command``.

    ``missing``: the approval binds no state, legitimately (no preview was made when it was
    reviewed, or the preview failed and its reviewers saw that finding); ``unusable``: the
    record cannot be trusted to say what the approval covers (it was previewed, but the record
    is gone, unfinished, unreadable or has no entry for the command), so the gateway refuses.
    """

    targets: tuple[Target, ...] = ()
    missing: str = ""  # set when nothing recorded binds the command (the reason why)
    unusable: str = ""  # set when the record cannot be trusted (the reason why)
    notes: tuple[str, ...] = field(default_factory=tuple)


def _was_previewed(body: Mapping[str, Any]) -> bool:
    conds = (body.get("status") or {}).get("conditions") or []
    return any(isinstance(c, Mapping) and c.get("type") == "Previewed" for c in conds)


def binding(body: Mapping[str, Any], command: str) -> BindingPlan:
    """The targets an approval's preview bound ``command`` to (see :class:`BindingPlan`).

    An approved request's preview is always finished: the panel votes, and decisions count,
    only once it is ``Completed`` or ``Failed``. A ``Completed`` preview has an entry for every
    command of the request (it holds as many as the request may have)."""
    data = status_of(body)
    if not data:
        if _was_previewed(body):
            return BindingPlan(unusable="the request was previewed (condition Previewed) but "
                                        "its status.preview is gone")
        return BindingPlan(missing="the request has no preview")
    phase = data.get("phase")
    if phase == Phase.FAILED.value:
        return BindingPlan(missing="its preview failed (a finding its reviewers saw)")
    if phase != Phase.COMPLETED.value:
        return BindingPlan(unusable=f"its preview is {str(phase or 'unknown')[:40]}, not "
                                    "finished, although the request was decided")
    preview = recorded(body)
    if preview is None:
        return BindingPlan(unusable="its recorded preview is unreadable")
    entry = preview.for_command(command)
    if entry is None:
        return BindingPlan(unusable="its preview has no entry for this command")
    notes: list[str] = []
    if entry.targets_truncated:
        notes.append(f"{entry.targets_truncated} targets beyond the first "
                     f"{len(entry.targets)} were not recorded and are not compared")
    return BindingPlan(targets=tuple(entry.targets), notes=tuple(notes))


def kinds_of(commands: Sequence[CommandPreview]) -> list[str]:
    return sorted({t.kind for c in commands for t in c.targets})


__all__ = [
    "MAX_COMMANDS",
    "MAX_DIFF_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_TARGETS",
    "MESSAGE_PREFIX",
    "SHORT_ID_CHARS",
    "Action",
    "BindingPlan",
    "Change",
    "CommandPreview",
    "Outcome",
    "Phase",
    "Preview",
    "PreviewInvalid",
    "Summary",
    "Target",
    "binding",
    "bound_version",
    "changes",
    "container_identity",
    "container_named",
    "decode",
    "describe_findings",
    "drift",
    "encode",
    "fit",
    "kinds_of",
    "recorded",
    "status",
    "status_of",
    "summary_lines",
    "target_path",
]
