"""From recorded dry-run exchanges to what reviewers read: targets, diff, outcome."""

from __future__ import annotations

from typing import Any

import pytest

from wingman.model.preview import Action, Outcome
from wingman.preview.proxy import ApiPath, Exchange
from wingman.preview.report import docker_preview, kubectl_preview

SCALE = "kubectl scale deployment/web --replicas=3 -n apps"


def _deploy(replicas: int, rv: str = "240", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps", "uid": "u-1",
                         "resourceVersion": rv, "generation": 4, **meta,
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"replicas": replicas}, "status": {"replicas": 1}}


def _scale(replicas: int) -> dict[str, Any]:
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "240"},
            "spec": {"replicas": replicas}, "status": {"replicas": 1}}


def test_a_scale_shows_the_replica_change_and_the_deployment_it_is_bound_to() -> None:
    api = ApiPath.parse("/apis/apps/v1/namespaces/apps/deployments/web/scale")
    assert api is not None and api.subresource == "scale"
    ex = Exchange("PATCH", "/apis/apps/v1/namespaces/apps/deployments/web/scale", 200, api,
                  before=_scale(1), parent=_deploy(1), after=_scale(3))
    result = kubectl_preview(SCALE, [ex], exit_code=0, timed_out=False,
                             output="deployment.apps/web scaled (server dry run)\n")
    assert result.outcome is Outcome.PREVIEWED
    (target,) = result.targets
    assert (target.kind, target.namespace, target.name, target.uid, target.generation) == (
        "Deployment", "apps", "web", "u-1", 4)
    assert "-  replicas: 1\n+  replicas: 3" in result.diff
    assert "managedFields" not in result.diff and "resourceVersion" not in result.diff


def test_secret_values_never_reach_the_diff_only_which_keys_change() -> None:
    api = ApiPath.parse("/api/v1/namespaces/apps/secrets/db")
    before = {"kind": "Secret", "metadata": {"name": "db", "namespace": "apps", "uid": "s"},
              "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="}}
    after = {"kind": "Secret", "metadata": {"name": "db", "namespace": "apps", "uid": "s"},
             "data": {"password": "c2VjcmV0IQ==", "user": "YWRtaW4="}}
    ex = Exchange("PATCH", "/api/v1/namespaces/apps/secrets/db", 200, api, before=before,
                  parent=before, after=after)
    result = kubectl_preview("kubectl patch secret db -n apps", [ex], exit_code=0,
                             timed_out=False, output="", secrets=("sa-token-value",))
    for value in ("aHVudGVyMg==", "c2VjcmV0IQ==", "YWRtaW4="):
        assert value not in result.diff
    assert "+  password: '[REDACTED] (changed)'" in result.diff
    assert "user" not in result.diff.split("@@", 2)[-1].replace("  user: '[REDACTED]'", "")


def test_a_create_and_a_delete_are_named_as_such() -> None:
    created = {"kind": "ConfigMap", "metadata": {"name": "conf", "namespace": "apps",
                                                 "uid": "dry-uid"}, "data": {"k": "v"}}
    create = Exchange("POST", "/api/v1/namespaces/apps/configmaps", 201,
                      ApiPath.parse("/api/v1/namespaces/apps/configmaps/conf"), after=created,
                      exists=False)
    delete = Exchange("DELETE", "/apis/apps/v1/namespaces/apps/deployments/web", 200,
                      ApiPath.parse("/apis/apps/v1/namespaces/apps/deployments/web"),
                      before=_deploy(1), parent=_deploy(1), after=_deploy(1))
    result = kubectl_preview("kubectl ...", [create, delete], exit_code=0, timed_out=False,
                             output="")
    made, gone = result.targets
    assert (made.action, made.exists, made.uid) == (Action.CREATE, False, "")
    assert (gone.action, gone.uid) == (Action.DELETE, "u-1")
    assert "! would be deleted" in result.diff and "+data:" in result.diff


def test_failures_become_findings_with_the_servers_message() -> None:
    missing = Exchange("GET", "/apis/apps/v1/namespaces/apps/deployments/ghost", 404,
                       ApiPath.parse("/apis/apps/v1/namespaces/apps/deployments/ghost"),
                       message='deployments.apps "ghost" not found')
    result = kubectl_preview(SCALE, [missing], exit_code=1, timed_out=False,
                             output='Error from server (NotFound): ...\n')
    assert (result.outcome, result.message) == (Outcome.TARGET_MISSING,
                                                'deployments.apps "ghost" not found')
    forbidden = Exchange("PATCH", "/apis/apps/v1/namespaces/kube-system/deployments/dns", 403,
                         ApiPath.parse("/apis/apps/v1/namespaces/kube-system/deployments/dns"),
                         message="forbidden")
    assert kubectl_preview(SCALE, [forbidden], exit_code=1, timed_out=False,
                           output="").outcome is Outcome.FORBIDDEN
    refused = Exchange("POST", "/api/v1/namespaces/apps/pods/web/exec", 403, refused="streams")
    assert kubectl_preview(SCALE, [refused], exit_code=1, timed_out=False,
                           output="").outcome is Outcome.NOT_PREVIEWABLE
    assert kubectl_preview(SCALE, [], exit_code=None, timed_out=True,
                           output="").outcome is Outcome.TIMED_OUT


@pytest.mark.parametrize(("path", "finding"), [
    ("/api", False), ("/apis/apps/v1", False), ("/api/v1/", False), ("/openapi/v3", False),
    # '$' also matches before a final newline: such a path is no discovery path
    ("/api/v1\n", True), ("/apis/apps/v1\n", True), ("/api/v1\r\n", True),
    ("/version", False), ("/healthz/ping", False), ("/openapi/v3/apis/apps/v1", False),
    # /openapi, /version and /healthz are whole path segments, not the start of a name
    ("/versionfoo", True), ("/healthzz/ping", True), ("/openapis/v3", True),
    ("/version\n", True),
    # under /api, a third segment lists objects (a cluster-scoped resource): no discovery
    ("/api/v1/namespaces", True), ("/api/v1/nodes/", True), ("/apis/apps", False),
])
def test_only_a_failed_discovery_call_is_not_why_kubectl_failed(path: str,
                                                                 finding: bool) -> None:
    """kubectl's discovery calls may fail harmlessly (an aggregated API that is down): when
    kubectl fails, any other failed call is what the outcome and message tell."""
    failed = Exchange("GET", path, 403, message="forbidden")
    outcome = kubectl_preview(SCALE, [failed], exit_code=1, timed_out=False, output="").outcome
    assert outcome is (Outcome.FORBIDDEN if finding else Outcome.FAILED)


def test_kubectl_output_is_redacted_in_messages() -> None:
    result = kubectl_preview(SCALE, [], exit_code=1, timed_out=False,
                             output="error: token=abc123 sa-token-value\n",
                             secrets=("sa-token-value",))
    assert "abc123" not in result.message and "sa-token-value" not in result.message


def test_a_docker_preview_shows_the_containers_current_state() -> None:
    state = {"Id": "c0ffee" * 10 + "abcd", "RestartCount": 2, "Config": {"Image": "nginx:1.27"},
             "State": {"Running": True, "Status": "running",
                       "StartedAt": "2026-01-02T03:04:05.123456789Z"}}
    result = docker_preview("docker restart web", "restart", "web", state)
    (target,) = result.targets
    assert (target.group, target.kind, target.uid) == ("docker", "Container", state["Id"])
    assert target.resource_version == "2026-01-02T03:04:05.123456789Z"
    assert "running" in result.diff and "nginx:1.27" in result.diff
    assert "stopped and started" in result.message
    assert docker_preview("docker stop web", "stop", "web",
                          {**state, "State": {"Running": False, "Status": "exited"}}
                          ).message.endswith("nothing would change")
    assert docker_preview("docker restart gone", "restart", "gone",
                          None).outcome is Outcome.TARGET_MISSING


def test_a_secret_value_copied_elsewhere_in_the_secret_is_redacted_too() -> None:
    # a JSON patch can copy /data/password into an annotation, label or type: the value must
    # not reach the diff in any field, base64 or decoded
    api = ApiPath.parse("/api/v1/namespaces/apps/secrets/db")
    before = {"kind": "Secret", "metadata": {"name": "db", "namespace": "apps", "uid": "s"},
              "data": {"password": "aHVudGVyMg=="}, "type": "Opaque"}
    after = {"kind": "Secret",
             "metadata": {"name": "db", "namespace": "apps", "uid": "s",
                          "annotations": {"copied": "aHVudGVyMg==", "plain": "hunter2",
                                          "note": "kept"}},
             "data": {"password": "aHVudGVyMg=="}, "type": "hunter2"}
    ex = Exchange("PATCH", "/api/v1/namespaces/apps/secrets/db", 200, api, before=before,
                  parent=before, after=after)
    result = kubectl_preview("kubectl patch secret db -n apps --type=json -p ...", [ex],
                             exit_code=0, timed_out=False, output="")
    assert "hunter2" not in result.diff and "aHVudGVyMg" not in result.diff, result.diff
    assert "copied:" in result.diff and "note: kept" in result.diff, result.diff


def test_kubectls_informational_log_lines_are_not_the_message() -> None:
    api = ApiPath.parse("/apis/apps/v1/namespaces/apps/deployments/web/scale")
    ex = Exchange("PATCH", "/apis/apps/v1/namespaces/apps/deployments/web/scale", 200, api,
                  before=_deploy(1), parent=_deploy(1), after=_deploy(3))
    log = ("I1201 04:11:40.580456   24214 cmd.go:527] kubectl command headers turned on\n"
           "Warning: spec.replicas is high\n")
    result = kubectl_preview("kubectl scale ...", [ex], exit_code=0, timed_out=False,
                             output=log)
    assert result.message == "dry run: Warning: spec.replicas is high"
