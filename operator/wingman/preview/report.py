"""From what a dry run did to what reviewers see: one command's preview (pure).

:func:`kubectl_preview` turns the exchanges the proxy recorded for one kubectl command (and
kubectl's exit code and output) into a :class:`~wingman.model.preview.CommandPreview`: the
targets (each object written, with the uid and version it had before), the diff, and the
outcome. :func:`docker_preview` does the same for a docker command from the container's
current state (``docker inspect``).

Outcomes, in the order they are decided: the run timed out (``TimedOut``); kubectl succeeded
(``Previewed``); otherwise the first failed call that is not kubectl's discovery (``/api``,
``/api/<v>``, ``/apis[/<g>[/<v>]]``, ``/openapi``, ``/version``, ``/healthz``) decides: the
proxy refused it
(``NotPreviewable``), 404 (``TargetMissing``), 401/403 (``Forbidden``), 400/409/422
(``Invalid``); otherwise ``Failed`` with kubectl's own message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wingman.model.preview import (
    MAX_DIFF_BYTES,
    MAX_MESSAGE_CHARS,
    MAX_TARGETS,
    Action,
    CommandPreview,
    Outcome,
    Target,
    container_identity,
)
from wingman.preview.diff import bounded, object_diff
from wingman.preview.proxy import Exchange

#: kubectl's own informational log lines (klog: ``I1201 04:11:40.580456  24214 cmd.go:527] ...``)
#: say nothing about the change; kubectl prints a few even at ``--v=0``.
_KLOG_INFO = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ [^\]]+\] ")
#: kubectl's discovery calls, whose failure is harmless (an aggregated API that is down): the
#: group lists (``/api``, ``/api/<version>``, ``/apis/<group>/<version>``; ``/api/v1/nodes`` is
#: a list of objects, no discovery) and ``/openapi``, ``/version``, ``/healthz`` as whole path
#: segments, with what is under them (``/versionfoo`` is none).
_DISCOVERY = re.compile(r"^/api(/[^/\s]+)?/?\Z|^/apis(/[^/\s]+){0,2}/?\Z"
                        r"|^/(openapi|version|healthz)(/[^/\s]+)*/?\Z")


def _message(text: str, secrets: Iterable[str]) -> str:
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not _KLOG_INFO.match(line.strip())]
    clean, _ = bounded(" / ".join(lines[-4:]), MAX_MESSAGE_CHARS, secrets)
    return clean


def _target(ex: Exchange) -> tuple[Target, str] | None:
    """The object an exchange wrote and its diff, or None when it names no object."""
    api = ex.api
    if api is None or not api.name:
        return None
    identity = ex.parent if ex.exists and ex.parent is not None else ex.after
    meta = (identity or {}).get("metadata") or {}
    kind = str((identity or {}).get("kind") or "") or api.resource
    generation = meta.get("generation") if ex.exists else None
    if not isinstance(generation, int) or isinstance(generation, bool):
        generation = None
    if not ex.exists:
        action = Action.CREATE
    elif ex.method == "DELETE" or (ex.method == "POST" and api.subresource == "eviction"):
        action = Action.DELETE
    else:
        action = Action.UPDATE
    target = Target(
        group=api.group, version=api.version, resource=api.resource, kind=kind,
        name=api.name, namespace=api.namespace,
        uid=str(meta.get("uid") or "") if ex.exists else "",
        resource_version=str(meta.get("resourceVersion") or "") if ex.exists else "",
        generation=generation, exists=ex.exists, action=action)
    label = target.ref + (f" ({api.subresource})" if api.subresource else "")
    if action is Action.DELETE:
        verb = "evicted" if api.subresource == "eviction" else "deleted"
        diff = f"--- {label}\n! would be {verb}\n"
    else:
        diff = object_diff(ex.before, ex.after, label=label,
                           keep_status=api.subresource == "status", limit=MAX_DIFF_BYTES)
        if not diff:
            diff = f"--- {label}\n= unchanged by the dry run\n"
    return target, diff


def _failure(exchanges: Sequence[Exchange]) -> Exchange | None:
    for ex in exchanges:
        if ex.refused:
            return ex
    for ex in exchanges:
        if ex.status >= 400 and not _DISCOVERY.match(ex.path):
            return ex
    return None


def _outcome_of(ex: Exchange) -> Outcome:
    if ex.refused:
        return Outcome.NOT_PREVIEWABLE
    if ex.status == 404:
        return Outcome.TARGET_MISSING
    if ex.status in (401, 403):
        return Outcome.FORBIDDEN
    if ex.status in (400, 409, 422):
        return Outcome.INVALID
    return Outcome.FAILED


def kubectl_preview(command: str, exchanges: Sequence[Exchange], *, exit_code: int | None,
                    output: str, timed_out: bool, secrets: Iterable[str] = (),
                    note: str = "") -> CommandPreview:
    """The preview of one kubectl command from what its dry run did."""
    secrets = tuple(secrets)
    targets: dict[tuple[str, str, str, str], Target] = {}
    diffs: list[str] = []
    for ex in exchanges:
        if not (ex.write and ex.ok):
            continue
        found = _target(ex)
        if found is None:
            continue
        target, diff = found
        key = (target.group, target.resource, target.namespace, target.name)
        if key not in targets:
            targets[key] = target
        diffs.append(diff)
    listed = tuple(targets.values())[:MAX_TARGETS]
    extra = len(targets) - len(listed)
    diff, cut = bounded("".join(diffs), MAX_DIFF_BYTES, secrets)
    said = _message(output, secrets)
    if timed_out:
        outcome, message = Outcome.TIMED_OUT, f"the dry run did not finish in time. {said}"
    elif exit_code == 0:
        outcome = Outcome.PREVIEWED
        message = f"dry run: {said}" if said else "dry run accepted"
        if not targets:
            message += "; the command wrote nothing"
    else:
        failed = _failure(exchanges)
        outcome = _outcome_of(failed) if failed is not None else Outcome.FAILED
        detail = failed.message if failed is not None and failed.message else said
        message, _ = bounded(detail or f"kubectl exited {exit_code}", MAX_MESSAGE_CHARS,
                             secrets)
    if note:
        message = f"{message} ({note})"
    return CommandPreview(command, "kubernetes", outcome, message[:MAX_MESSAGE_CHARS], listed,
                          extra, diff, cut)


def not_run(command: str, executor: str, outcome: Outcome, message: str) -> CommandPreview:
    """A command the preview did not run (read-only, refused, outside the allowlist...)."""
    return CommandPreview(command, executor, outcome, message[:MAX_MESSAGE_CHARS])


def docker_preview(command: str, verb: str, container: str, state: Mapping[str, Any] | None,
                   *, error: str = "") -> CommandPreview:
    """The preview of ``docker restart|start|stop <container>`` from ``docker inspect``
    (``state`` None: not found, or ``error`` says why it could not be read)."""
    if error:
        return not_run(command, "docker", Outcome.FAILED, error)
    if state is None:
        return not_run(command, "docker", Outcome.TARGET_MISSING,
                       f"no container named {container} on the node's Docker engine")
    cid = str(state.get("Id") or "")
    st = state.get("State") or {}
    running = bool(st.get("Running"))
    started = str(st.get("StartedAt") or "")
    status = str(st.get("Status") or ("running" if running else "exited"))
    image = str((state.get("Config") or {}).get("Image") or state.get("Image") or "?")
    restarts = state.get("RestartCount", 0)
    identity = container_identity(state)["metadata"]
    target = Target(group="docker", version="v1", resource="containers", kind="Container",
                    name=container, uid=identity["uid"],
                    resource_version=identity["resourceVersion"])
    effect = {
        "restart": "would be stopped and started again" if running else "would be started",
        "start": "is running already: nothing would change" if running else "would be started",
        "stop": "would be stopped" if running else "is stopped already: nothing would change",
    }[verb]
    diff = (f"--- container {container} (id {cid[:12]})\n"
            f"  state: {status} (started {started or 'never'}), restarts: {restarts}, "
            f"image: {image}\n! docker {verb}: it {effect}\n")
    text, cut = bounded(diff, MAX_DIFF_BYTES)
    return CommandPreview(command, "docker", Outcome.PREVIEWED,
                          f"container {container} is {status}; it {effect}", (target,), 0,
                          text, cut)


__all__ = ["docker_preview", "kubectl_preview", "not_run"]
