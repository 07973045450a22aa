"""Outside checkers, offline: kubeconform with strict schemas (made from the pinned Kubernetes
module's OpenAPI document and the CRDs) and the upstream Pod Security evaluator, over the
rendered chart in its configurations and over the objects the operator creates at run time.

A checker that cannot fail proves nothing, so each is also shown a known-bad object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import CHART_DIR, CRDS_DIR, MANIFESTS_DIR, render
from support.conformance import assert_conforms, kubeconform, pod_security
from wingman.operator import manifests
from wingman.settings import OperatorSettings

#: Prometheus Operator kinds: their CRDs are neither in this repository nor in the pinned
#: Kubernetes module, so kubeconform has no schema for them (promtool checks the rules).
MONITORING = ("ServiceMonitor", "PrometheusRule")
EVERYTHING: dict[str, Any] = {
    "chat.enabled": True,
    "chat.webhook": {"enabled": True, "url": "https://hooks.example.com/wingman"},
    "chat.stepUp": {"enabled": False},
    "metrics.serviceMonitor.enabled": True,
    "metrics.prometheusRule.enabled": True,
    "metrics.dashboard.enabled": True,
    "gateway.docker.enabled": True,
    "gateway.targets": [{"namespace": "apps"}, {"namespace": "batch", "rules": [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "delete"]}]}],
    "operator.replicas": 2,
    "operator.podLabels": {"team": "platform"},
    "operator.tolerations": [{"key": "dedicated", "operator": "Exists"}],
    "operator.priorityClassName": "system-cluster-critical",
    "operator.votersSecret": "llm-keys",
    "policy.panel.voters": [{"type": "builtin", "name": "destructive"},
                            {"type": "openai", "name": "gpt", "model": "m",
                             "apiKeySecretKey": "openai"}],
    "policy.panel.threshold": 1, "policy.panel.quorum": 1,
    "networkPolicy.llm.cidrs": ["203.0.113.7/32"],
    "image.pullSecrets": ["registry"],
}
CASES = {"defaults": (None, {}), "test": ("test", {}), "prd": ("prd", {}),
         "prd-everything": ("prd", EVERYTHING)}


@pytest.fixture(scope="module", params=list(CASES))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    env, values = CASES[request.param]
    return render(env, values, namespace=f"wingman-{env or 'test'}")


def _job(tmp_path: Path, **env: str) -> dict[str, Any]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    settings = OperatorSettings.from_env({"WINGMAN_POLICY_FILE": str(policy),
                                          "WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit", **env})
    return manifests.gateway_job({"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
                                  "metadata": {"name": "g", "namespace": "wingman-test",
                                               "uid": "u"}}, settings, 300)


TUNED = {"WINGMAN_GATEWAY_POD": (
    '{"nodeSelector": {"pool": "gw"}, "tolerations": [{"key": "k", "operator": "Exists"}], '
    '"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": '
    '{"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", '
    '"values": ["gw"]}]}]}}}, "priorityClassName": "high", "labels": {"team": "ops"}, '
    '"annotations": {"a": "b"}, "resources": {"limits": {"memory": "1Gi", "cpu": 1}}}'),
    "WINGMAN_OBJECT_LABELS": '{"app.kubernetes.io/instance": "wingman", "team": "ops"}'}


# --------------------------------------------------------------------------- kubeconform


def test_the_rendered_chart_conforms_to_strict_schemas(rendered: list[dict[str, Any]]) -> None:
    assert_conforms(rendered, skip_kinds=MONITORING)


def test_the_crds_samples_and_artifact_hub_examples_conform() -> None:
    crds = [yaml.safe_load(p.read_text()) for p in sorted(CRDS_DIR.glob("*.yaml"))]
    samples = [yaml.safe_load(p.read_text())
               for env in ("test", "prd")
               for p in sorted((MANIFESTS_DIR / env / "samples").glob("*.yaml"))]
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    examples = yaml.safe_load(chart["annotations"]["artifacthub.io/crdsExamples"])
    assert crds and samples and examples
    assert_conforms([*crds, *samples, *examples])


def test_what_the_operator_creates_conforms(tmp_path: Path) -> None:
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "g", "namespace": "wingman-test", "uid": "u"}}
    job = _job(tmp_path)
    objects = [job, _job(tmp_path, **TUNED),
               _job(tmp_path, WINGMAN_GATEWAY_DOCKER_SOCKET="/var/run/docker.sock"),
               manifests.token_secret(grant, "g-token-0123456789abcdef", "t" * 40,
                                      1_800_000_000, "job-uid",
                                      OperatorSettings.from_env({}))]
    assert_conforms(objects)


def test_kubeconform_is_strict_about_fields_and_lenient_about_int_or_string() -> None:
    """What the schemas must catch: a misspelt field, a field in the wrong place, a wrong
    type; what they must let through: ports as names or numbers, quantities as numbers."""
    def deployment(container: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i:1", **container}]}}}}

    bad = [deployment({"securityContext": {"runAsNonroot": True}}),
           deployment({"readOnlyRootFilesystem": True}),
           deployment({"ports": [{"containerPort": "http"}]}),
           {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
            "metadata": {"name": "g"}, "spec": {"approvalRef": {"name": "r"}, "command": "x",
                                                "ttlSecond": 30}}]
    verdicts = kubeconform(bad)
    assert [v.status for v in verdicts] == ["statusInvalid"] * len(bad), verdicts
    good = deployment({"livenessProbe": {"httpGet": {"port": "health", "path": "/"}},
                       "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}},
                       "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}})
    assert [v.status for v in kubeconform([good])] == ["statusValid"]


# --------------------------------------------------------------------------- Pod Security


def test_every_pod_the_chart_renders_is_restricted(rendered: list[dict[str, Any]]) -> None:
    verdicts = pod_security(rendered)
    pods = [o for o in rendered if o["kind"] in ("Deployment", "Pod", "Job")]
    assert len(verdicts) == len(pods) >= 2
    assert all(v.allowed for v in verdicts), [v for v in verdicts if not v.allowed]


def test_the_gateway_job_the_operator_builds_is_restricted(tmp_path: Path) -> None:
    (plain, tuned) = pod_security([_job(tmp_path), _job(tmp_path, **TUNED)])
    assert plain.allowed and tuned.allowed, (plain, tuned)


def test_the_preview_job_the_operator_builds_is_restricted(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    settings = OperatorSettings.from_env({"WINGMAN_POLICY_FILE": str(policy)})
    job = manifests.preview_job({"apiVersion": "wingman.dev/v1alpha1", "kind": "ApprovalRequest",
                                 "metadata": {"name": "r", "namespace": "wingman-test",
                                              "uid": "u"}}, settings)
    (verdict,) = pod_security([job])
    assert verdict.allowed, verdict


def test_the_docker_executor_job_fails_even_baseline_by_design(tmp_path: Path) -> None:
    """gateway.docker.enabled mounts the node's Docker socket (a hostPath: root on the node).
    That is what the docker executor is, so its gateway pods are not even Pod Security
    'baseline': namespaces that enforce a level reject them, and turning the executor on is a
    deliberate, documented exception (docs/prd-deployment.md)."""
    docker = _job(tmp_path, WINGMAN_GATEWAY_DOCKER_SOCKET="/var/run/docker.sock")
    (baseline,) = pod_security([docker], level="baseline")
    assert not baseline.allowed
    assert [r for r, _ in baseline.forbidden] == ["hostPath volumes"], baseline
    assert "docker" in baseline.forbidden[0][1]
    (restricted,) = pod_security([docker], level="restricted")
    assert [r for r, _ in restricted.forbidden] == ["restricted volume types"], restricted
    (privileged,) = pod_security([docker], level="privileged")
    assert privileged.allowed


def test_the_evaluator_refuses_what_restricted_forbids() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    (verdict,) = pod_security([pod])
    reasons = {r for r, _ in verdict.forbidden}
    assert not verdict.allowed
    assert {"allowPrivilegeEscalation != false", "unrestricted capabilities",
            "runAsNonRoot != true", "seccompProfile"} <= reasons
