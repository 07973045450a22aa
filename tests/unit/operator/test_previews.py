"""The preview as the operator drives it: started, recorded from the pod's termination
message, failed or timed out; the panel votes only once it is recorded."""

from __future__ import annotations

import datetime as dt
from typing import Any

from wingman.model import preview as pv
from wingman.operator import manifests, previews
from wingman.review.policy import EnvironmentPolicy
from wingman.settings import OperatorSettings

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
POLICY = EnvironmentPolicy.from_dict({"environment": "test",
                                      "preview": {"enabled": True, "timeoutSeconds": 60}})
SCALE = "kubectl scale deployment/web --replicas=3 -n apps"


def body(**status: Any) -> dict[str, Any]:
    return {"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {"commands": [SCALE]}, "status": status}


def merged(b: dict[str, Any], t: Any) -> dict[str, Any]:
    assert t is not None
    return {**b, "status": {**b["status"], **t.status}}


def pod(message: str | None, code: int = 0) -> dict[str, Any]:
    term: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
    if message is not None:
        term["message"] = message
    return {"status": {"containerStatuses": [{"name": "preview",
                                              "state": {"terminated": term}}]}}


JOB = {"metadata": {"name": "r-preview", "uid": "job-1"}}


def job_pod(message: str, *, owner: str = "job-1", controller: bool = True,
            account: str = "wingman-preview", container: str = "preview") -> dict[str, Any]:
    made = pod(message)
    made["metadata"] = {"name": "r-preview-abcde", "labels": {
        "batch.kubernetes.io/controller-uid": "job-1"}, "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "r-preview", "uid": owner,
         "controller": controller}]}
    made["spec"] = {"serviceAccountName": account}
    made["status"]["containerStatuses"][0]["name"] = container
    return made


def result(*outcomes: pv.Outcome, uid: str = "u1") -> pv.Preview:
    target = pv.Target(group="apps", version="v1", resource="deployments", kind="Deployment",
                       name="web", namespace="apps", uid="d1", resource_version="7",
                       generation=2)
    return pv.Preview(uid, tuple(
        pv.CommandPreview(SCALE, "kubernetes", o, "dry run" if o is pv.Outcome.PREVIEWED
                          else 'deployments.apps "web" not found',
                          (target,) if o is pv.Outcome.PREVIEWED else ())
        for o in outcomes))


def running() -> dict[str, Any]:
    t = previews.started(body(), "r-preview", NOW)
    assert t is not None
    return merged(body(), t)


def test_the_panel_waits_for_the_preview_which_shows_the_request_reviewing() -> None:
    assert previews.needs_preview(body(), POLICY)
    b = running()
    assert b["status"]["phase"] == "Reviewing" and previews.phase_of(b) == "Running"
    (cond,) = b["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Previewed", "Unknown",
                                                              "PreviewRunning")
    assert not previews.ready_for_review(b, POLICY)
    assert previews.started(b, "r-preview", NOW) is None, "once"
    off = EnvironmentPolicy.from_dict({"environment": "test", "preview": {"enabled": False}})
    assert previews.ready_for_review(body(), off)


def test_the_termination_message_becomes_status_preview() -> None:
    b = running()
    assert previews.finished(b, [], job_failed=False, now=NOW) is None, "still running"
    _, message = pv.fit(result(pv.Outcome.PREVIEWED))
    t = previews.finished(b, [pod(message)], job_failed=False, now=NOW)
    assert t is not None and t.event_reason == "PreviewSucceeded" and not t.warning
    done = merged(b, t)
    assert previews.ready_for_review(done, POLICY)
    st = done["status"]["preview"]
    assert (st["phase"], st["jobName"], st["summary"]["objects"]) == ("Completed", "r-preview",
                                                                     1)
    assert st["commands"][0]["targets"][0]["generation"] == 2
    assert pv.recorded(done) == result(pv.Outcome.PREVIEWED)
    assert t.audit_event == "ApprovalPreviewed" and t.audit_data["targets"][0]["uid"] == "d1"


def test_a_finding_is_in_the_condition_and_a_warning() -> None:
    _, message = pv.fit(result(pv.Outcome.TARGET_MISSING))
    t = previews.finished(running(), [pod(message)], job_failed=False, now=NOW)
    assert t is not None and t.warning and t.event_reason == "PreviewFindings"
    cond = next(c for c in t.status["conditions"] if c["type"] == "Previewed")
    assert cond["status"] == "True" and "TargetMissing" in cond["message"]
    assert '"web" not found' in cond["message"]


def test_no_result_a_forged_result_or_a_late_one_is_a_failed_preview() -> None:
    b = running()
    for pods, failed_job, reason in (
            ([pod(None, 1)], False, "PreviewNoResult"),
            ([pod("garbage")], False, "PreviewInvalid"),
            ([pod(pv.fit(result(pv.Outcome.PREVIEWED, uid="other"))[1])], False,
             "PreviewInvalid"),
            ([], True, "PreviewJobFailed")):
        t = previews.finished(b, pods, job_failed=failed_job, now=NOW)
        assert t is not None and t.event_reason == reason, (reason, t)
        assert t.status["preview"]["phase"] == "Failed" and t.warning
        cond = next(c for c in t.status["conditions"] if c["type"] == "Previewed")
        assert cond["status"] == "False"
    assert previews.timed_out(b, POLICY, NOW + dt.timedelta(seconds=89)) is None
    late = previews.timed_out(b, POLICY, NOW + dt.timedelta(seconds=90))
    assert late is not None and late.event_reason == "PreviewTimedOut"
    assert previews.ready_for_review(merged(b, late), POLICY)


def test_the_preview_job_runs_wingman_preview_as_the_dry_run_identity() -> None:
    image = "reg/wingman@sha256:" + "a" * 64
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": "ns",
                                          "WINGMAN_GATEWAY_IMAGE": image})
    job = manifests.preview_job(body(), settings)
    assert job["metadata"]["name"] == "r-preview"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ApprovalRequest"
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["serviceAccountName"] == "wingman-preview"
    assert container["command"] == ["/usr/bin/tini", "--", "wingman", "preview"]
    assert "args" not in container
    assert container["image"] == settings.gateway_image
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WINGMAN_APPROVAL_UID"] == "u1"
    assert env["WINGMAN_TERMINATION_LOG"] == container["terminationMessagePath"]
    assert job["spec"]["backoffLimit"] == 0 and "suspend" not in job["spec"]
    assert not [v for v in spec["volumes"] if "secret" in v], "a preview holds no secret"


def test_only_the_jobs_own_pod_as_the_preview_identity_is_read() -> None:
    # whoever may create pods could copy the Job's labels and write a forged "all clear" into
    # their own pod's termination message: only the Job controller's pod running as
    # wingman-preview (which admission reserves to the Job controller) is believed
    _, forged = pv.fit(pv.Preview("u1", ()))
    _, real = pv.fit(result(pv.Outcome.TARGET_MISSING))
    impostors = [job_pod(forged, account="default"), job_pod(forged, owner="other-job"),
                 job_pod(forged, controller=False), {**job_pod(forged), "metadata": {
                     "labels": {"batch.kubernetes.io/controller-uid": "job-1"}}}]
    assert previews.job_pods(impostors, JOB, "wingman-preview") == []
    genuine = job_pod(real)
    assert previews.job_pods([*impostors, genuine], JOB, "wingman-preview") == [genuine]
    t = previews.finished(running(), previews.job_pods([*impostors, genuine], JOB,
                                                       "wingman-preview"),
                          job_failed=False, now=NOW)
    assert t is not None and t.event_reason == "PreviewFindings"
    # a sidecar-like container of another name is not the preview's result either
    other = job_pod(forged, container="helper")
    assert previews.finished(running(), previews.job_pods([other], JOB, "wingman-preview"),
                             job_failed=False, now=NOW) is None
