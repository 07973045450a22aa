"""The preview of an ApprovalRequest as the operator drives it: pure functions of (object,
policy, the preview Job's pods, now) returning the transitions to write.

Before the panel votes, where ``policy.preview.enabled``, the operator creates the request's
preview Job (``manifests.preview_job``) and records ``status.preview.phase: Running`` with the
condition ``Previewed=Unknown`` (phase ``Reviewing``) (:func:`started`). When the Job's pod has
terminated, its termination message is the result (:func:`finished`): decoded and validated
strictly (``wingman.model.preview.decode``), bound to this request's uid, and recorded as
``status.preview`` (``Completed``) with ``Previewed=True`` (reason ``PreviewSucceeded``, or
``PreviewFindings`` when some command could not be previewed cleanly: the finding is in the
condition's message and the Warning Event); only a pod of that Job, running as the preview
ServiceAccount, is read (:func:`job_pods`). A pod that ended without a valid result, a Job that
failed, or a preview that outlived its deadline (:func:`timed_out`) is recorded as ``Failed``
with ``Previewed=False``: a finding too. Only then does the panel vote (:func:`ready_for_review`):
the panel sees the preview; a preview never blocks a request for longer than its timeout.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from wingman import conditions as cond
from wingman.model import preview as pv
from wingman.model.approvals import parse_time
from wingman.operator.approvals import Transition
from wingman.review.policy import EnvironmentPolicy

Body = Mapping[str, Any]
#: How long after its timeout a preview that has not reported is given up.
GRACE_SECONDS = 30


def _conditions(body: Body) -> list[dict[str, Any]]:
    return [dict(c) for c in (body.get("status") or {}).get("conditions") or []]


def _generation(body: Body) -> int:
    return int((body.get("metadata") or {}).get("generation") or 1)


def _previewed(conds: list[dict[str, Any]], status: str, reason: str, message: str,
               gen: int, now: dt.datetime) -> list[dict[str, Any]]:
    """``conds`` with ``Previewed`` set (True, False or Unknown)."""
    if status in ("True", "False"):
        return cond.set_condition(conds, "Previewed", status == "True", reason, message, gen,
                                  now)
    out = [c for c in conds if c.get("type") != "Previewed"]
    out.append({"type": "Previewed", "status": "Unknown", "reason": reason,
                "message": message[:1000], "lastTransitionTime": cond.rfc3339(now),
                "observedGeneration": gen})
    return out


def phase_of(body: Body) -> str:
    """``Running``, ``Completed``, ``Failed`` or '' (no preview yet)."""
    return str(pv.status_of(body).get("phase") or "")


def needs_preview(body: Body, policy: EnvironmentPolicy) -> bool:
    """Whether the request must be previewed before its review (and is not yet)."""
    if not policy.preview.enabled:
        return False
    if cond.get(_conditions(body), "Reviewed") is not None:
        return False  # reviewed already (before previews were enabled, or without one)
    return phase_of(body) not in (pv.Phase.COMPLETED.value, pv.Phase.FAILED.value)


def ready_for_review(body: Body, policy: EnvironmentPolicy) -> bool:
    """Whether the panel may vote: the preview is recorded (or not wanted)."""
    return not needs_preview(body, policy)


def started(body: Body, job: str, now: dt.datetime) -> Transition | None:
    """``Running``, once the preview Job exists; None when recorded already."""
    if phase_of(body):
        return None
    conds = _previewed(_conditions(body), "Unknown", "PreviewRunning",
                       f"preview Job {job} dry-runs the commands", _generation(body), now)
    phase = cond.approval_phase(conds)
    return Transition({"preview": {"phase": pv.Phase.RUNNING.value, "jobName": job,
                                   "startTime": cond.rfc3339(now)},
                       "conditions": conds, "phase": phase}, phase, "PreviewStarted",
                      f"preview Job {job} started: each command runs as a server-side dry run "
                      "before the panel votes", False, "ApprovalPreviewStarted", {"job": job})


def job_pods(pods: Sequence[Mapping[str, Any]], job: Mapping[str, Any],
             service_account: str) -> list[Mapping[str, Any]]:
    """The pods whose termination message may be taken as the preview's result: those the Job
    controller made for this Job (controller owner reference with the Job's uid) that run as
    the preview ServiceAccount. Admission lets only the Job controller create pods with that
    ServiceAccount, only with the pinned image running ``wingman preview``; a label is not
    enough (anyone who may create pods could copy the Job's labels and write a forged result
    into their own pod's termination message)."""
    uid = (job.get("metadata") or {}).get("uid")
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        owned = any(ref.get("controller") is True and ref.get("kind") == "Job"
                    and ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])
        if owned and uid and spec.get("serviceAccountName") == service_account:
            out.append(pod)
    return out


def _terminated(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != "preview":
                continue
            state = (status.get("state") or {}).get("terminated")
            if isinstance(state, Mapping):
                return state
    return None


def finished(body: Body, pods: Sequence[Mapping[str, Any]], *, job_failed: bool,
             now: dt.datetime) -> Transition | None:
    """The result of a running preview from its Job's pods; None while it still runs."""
    if phase_of(body) != pv.Phase.RUNNING.value:
        return None
    state = _terminated(pods)
    if state is None:
        if job_failed:
            return failed(body, "PreviewJobFailed", "the preview Job failed before its pod "
                          "reported (not scheduled, or the image could not run)", now)
        return None
    message = str(state.get("message") or "")
    code = state.get("exitCode")
    if not message:
        return failed(body, "PreviewNoResult", f"the preview pod exited {code} without a "
                      "result; see its log", now)
    try:
        result = pv.decode(message)
    except pv.PreviewInvalid as exc:
        return failed(body, "PreviewInvalid", f"the preview pod's result is not valid: {exc}",
                      now)
    uid = str((body.get("metadata") or {}).get("uid") or "")
    if result.approval_uid != uid:
        return failed(body, "PreviewInvalid", "the preview result is for another request "
                      "(uid mismatch)", now)
    return recorded(body, result, now)


def recorded(body: Body, result: pv.Preview, now: dt.datetime) -> Transition:
    """``Completed`` with ``result`` (its findings, if any, in the condition and the Event)."""
    current = pv.status_of(body)
    status = pv.status(result, job=str(current.get("jobName") or ""),
                       started=str(current.get("startTime") or cond.rfc3339(now)),
                       completed=cond.rfc3339(now))
    summary = result.summary()
    reach = (f"{summary.objects} object(s)"
             + (f" ({', '.join(summary.kinds)})" if summary.kinds else "")
             + (f" in {', '.join(summary.namespaces)}" if summary.namespaces else ""))
    findings = pv.describe_findings(result)
    if result.message and not result.commands:
        findings = result.message
    reason = "PreviewFindings" if findings else "PreviewSucceeded"
    message = (f"the commands would write {reach}"
               + (f"; findings: {findings}" if findings else ""))
    conds = _previewed(_conditions(body), "True", reason, message, _generation(body), now)
    phase = cond.approval_phase(conds)
    return Transition({"preview": status, "conditions": conds, "phase": phase}, phase,
                      reason, message, bool(findings), "ApprovalPreviewed",
                      {"objects": summary.objects, "kinds": list(summary.kinds),
                       "namespaces": list(summary.namespaces),
                       "findings": [{"command": c.command, "outcome": c.outcome.value}
                                    for c in result.findings],
                       "targets": [{**t.to_dict(), "commandIndex": i}
                                   for i, c in enumerate(result.commands)
                                   for t in c.targets]})


def failed(body: Body, reason: str, message: str, now: dt.datetime) -> Transition:
    """``Failed``: no usable result (a finding the panel and people see)."""
    current = pv.status_of(body)
    status = {"phase": pv.Phase.FAILED.value, "message": message[:1000],
              "completionTime": cond.rfc3339(now)}
    for key in ("jobName", "startTime"):
        if current.get(key):
            status[key] = current[key]
    conds = _previewed(_conditions(body), "False", reason, message, _generation(body), now)
    phase = cond.approval_phase(conds)
    return Transition({"preview": status, "conditions": conds, "phase": phase}, phase,
                      reason, f"the preview failed: {message}", True, "ApprovalPreviewFailed",
                      {"reason": reason, "message": message[:500]})


def deadline(body: Body, policy: EnvironmentPolicy) -> dt.datetime | None:
    """When a running preview is given up."""
    if phase_of(body) != pv.Phase.RUNNING.value:
        return None
    started_at = parse_time(pv.status_of(body).get("startTime"))
    if started_at is None:
        return None
    return started_at + dt.timedelta(seconds=policy.preview.timeout_seconds + GRACE_SECONDS)


def timed_out(body: Body, policy: EnvironmentPolicy, now: dt.datetime) -> Transition | None:
    """``Failed`` (``PreviewTimedOut``) once a running preview outlived its deadline."""
    when = deadline(body, policy)
    if when is None or now < when:
        return None
    return failed(body, "PreviewTimedOut", f"the preview did not report within "
                  f"{policy.preview.timeout_seconds}s (policy.preview.timeoutSeconds); the "
                  "panel votes without it", now)


__all__ = ["GRACE_SECONDS", "deadline", "failed", "finished", "job_pods", "needs_preview",
           "phase_of", "ready_for_review", "recorded", "started", "timed_out"]
