"""The Helm chart, rendered by the real helm (no cluster): lint, schema, RBAC shape, pod security.

What a user relies on: `helm install -f manifests/<env>/values.yaml` works, a typo in values is
refused at install time, the chart ships the same CRDs as crds/, and the rendered RBAC never
hands out execution rights to anyone but the gateway.
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import (
    CHART_DIR,
    CRDS_DIR,
    DEFAULT_GATEWAY_IMAGE,
    ENVIRONMENTS,
    env_values,
    find,
    helm,
    render,
    template_args,
    values_file,
)
from wingman.review.policy import EnvironmentPolicy
from wingman.verifier.rights import (
    CONTENT_DIGEST_ANNOTATION,
    admission_policy_names,
    policy_content_digest,
)

NS = "wingman-test"
Rendered = tuple[str | None, list[dict[str, Any]]]
RENDER_VALUES: dict[str, Any] = {"gateway.targets": [{"namespace": "apps"}]}

REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
    "wingman.dev/environment",
)
DANGEROUS_RESOURCES = {
    "pods/exec", "pods/attach", "pods/portforward", "pods/ephemeralcontainers",
    "pods/binding", "bindings", "nodes/proxy", "serviceaccounts/token", "*",
}
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate"}


@pytest.fixture(scope="module", params=[None, *ENVIRONMENTS], ids=["defaults", *ENVIRONMENTS])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    env = request.param
    return env, render(env, RENDER_VALUES, namespace=NS)


def _rules(objs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(o, r) for o in objs if o["kind"] in ("Role", "ClusterRole") for r in o["rules"]]


def _env(obj: dict[str, Any]) -> dict[str, Any]:
    container = obj["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --------------------------------------------------------------------------- helm itself


@pytest.mark.parametrize("env", [None, *ENVIRONMENTS], ids=["defaults", *ENVIRONMENTS])
def test_helm_lint_passes(env: str | None) -> None:
    args = ["lint", str(CHART_DIR), "--strict", "--namespace", NS]
    if env:
        args += ["-f", str(values_file(env))]
    result = helm(*args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_rendered_objects_cover_the_design(rendered: Rendered) -> None:
    _, objs = rendered
    kinds = {o["kind"] for o in objs}
    assert {
        "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap",
        "Deployment", "Service", "Lease", "Pod",
    } <= kinds
    names = {o["metadata"]["name"] for o in find(objs, "ServiceAccount")}
    assert {"wingman-operator", "wingman-gateway"} <= names


def test_chart_crds_are_byte_identical_to_top_level_crds() -> None:
    top = sorted(p.name for p in CRDS_DIR.glob("*.yaml"))
    chart = sorted(p.name for p in (CHART_DIR / "crds").glob("*.yaml"))
    assert top == chart, "charts/wingman/crds/ must hold exactly the files of crds/"
    assert {"approvalrequests.wingman.dev.yaml", "executiongrants.wingman.dev.yaml"} <= set(top)
    _, mismatch, errors = filecmp.cmpfiles(CRDS_DIR, CHART_DIR / "crds", top, shallow=False)
    assert mismatch == [] and errors == [], (
        f"differ: {mismatch + errors}; copy crds/*.yaml to charts/wingman/crds/"
    )


# --------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"enviroment": "test"}, "enviroment"),
        ({"environment": "Prod_1"}, "/environment"),
        ({"environment": "a" * 40}, "/environment"),
        # the environment is a label value too: it ends with a letter or digit
        ({"environment": "prd-"}, "/environment"),
        ({"image.pullSecrets": ["registry", "registry"]}, "/image/pullSecrets"),
        ({"policy.autoApproveMaxRisk": "extreme"}, "/policy/autoApproveMaxRisk"),
        ({"policy.requiredApprovals": "two"}, "/policy/requiredApprovals"),
        # ten decisions a request, the last kept for a rejection that revokes
        ({"policy.requiredApprovals": 10}, "/policy/requiredApprovals"),
        ({"policy.autoApprove": "yes"}, "/policy/autoApprove"),
        ({"image.tag": "latest"}, "/image/tag"),
        ({"image.repository": "ghcr.io/wingman-dev/wingman:0.1.0"}, "/image/repository"),
        ({"image.repository": "ghcr.io/wingman-dev/wingman@sha256:" + "a" * 64},
         "/image/repository"),
        ({"image.digest": "sha256:abc"}, "/image/digest"),
        ({"image.digest": "a" * 64}, "/image/digest"),
        ({"gateway.image": "ghcr.io/wingman-dev/wingman:0.1.0"}, "/gateway"),
        ({"logging.level": "verbose"}, "/logging/level"),
        ({"gateway.podLabels": {"wingman.dev/role": "gateway"}},
         "invalid propertyName 'wingman.dev/role'"),
        ({"policy.panel.voters": [{"type": "magic", "name": "x"}]}, "/policy/panel/voters/0/type"),
        ({"audit.type": "s3"}, "/audit/type"),
        ({"gateway.targets": [{"namespace": "apps", "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["use"]}]}]},
         "/gateway/targets/0/rules/0/verbs/0"),
        ({"gateway.targets": [{"namespace": "apps", "allowEscalatingRules": "yes"}]},
         "/gateway/targets/0/allowEscalatingRules"),
        # a custom workload is named with its group, as kubectl names it
        ({"gateway.customWorkloads": ["myjobs"]}, "/gateway/customWorkloads/0"),
        ({"gateway.customWorkloads": ["MyJobs.batch.example.com"]},
         "/gateway/customWorkloads/0"),
        ({"rbac.workers.serviceAccounts": [{"name": "agent", "namespace": "Bad NS"}]},
         "/rbac/workers/serviceAccounts/0/namespace"),
        # names of objects the chart refers to are Kubernetes names: nothing else would work,
        # and a claim name such as "a: b" must not reach the pod spec as YAML
        ({"audit.file.persistence.existingClaim": "audit: {}"},
         "/audit/file/persistence/existingClaim"),
        ({"audit.file.persistence.existingClaim": "Audit_Claim"},
         "/audit/file/persistence/existingClaim"),
        ({"audit.file.persistence.storageClassName": "fast ssd"},
         "/audit/file/persistence/storageClassName"),
        ({"audit.postgres.secretName": "pg\n  extra: x"}, "/audit/postgres/secretName"),
        ({"audit.checkpoints.witness.secretName": "Witness"},
         "/audit/checkpoints/witness/secretName"),
        ({"operator.priorityClassName": "High Priority"}, "/operator/priorityClassName"),
        # every address of one family: the probes and scrapes come to the pod's own address
        ({"operator.listenAddress": "localhost"}, "/operator/listenAddress"),
        ({"operator.listenAddress": "0.0.0.0:8080"}, "/operator/listenAddress"),
        ({"operator.listenAddress": "127.0.0.1"}, "/operator/listenAddress"),
        ({"chat.listenAddress": "::1"}, "/chat/listenAddress"),
        # label and node selector values are what the API server accepts
        ({"commonLabels": {"team": "platform team"}}, "/commonLabels/team"),
        ({"commonLabels": {"team": "-lead"}}, "/commonLabels/team"),
        ({"operator.podLabels": {"team": "a\nb"}}, "/operator/podLabels/team"),
        ({"operator.nodeSelector": {"pool": "gpu nodes"}}, "/operator/nodeSelector/pool"),
        ({"gateway.podLabels": {"team": "ops/platform"}}, "/gateway/podLabels/team"),
        ({"chat.nodeSelector": {"pool": "x" * 64}}, "/chat/nodeSelector/pool"),
        ({"metrics.serviceMonitor.labels": {"release": "kube prometheus"}},
         "/metrics/serviceMonitor/labels/release"),
        # resources, tolerations and affinity have the shape Kubernetes gives them: the
        # gateway's reach the operator as JSON and would fail every grant's Job at run time
        ({"operator.resources": {"request": {"cpu": "1"}}}, "/operator/resources"),
        ({"operator.resources": {"requests": {"cpu": "lots"}}},
         "/operator/resources/requests/cpu"),
        ({"gateway.resources": {"limits": {"memory": -1}}}, "/gateway/resources/limits/memory"),
        ({"chat.resources": {"limits": {"memory": "1 Gi"}}}, "/chat/resources/limits/memory"),
        ({"operator.tolerations": [{"key": "k", "operator": "In"}]},
         "/operator/tolerations/0/operator"),
        ({"gateway.tolerations": [{"key": "k", "efect": "NoSchedule"}]},
         "/gateway/tolerations/0"),
        ({"chat.tolerations": ["dedicated"]}, "/chat/tolerations/0"),
        ({"gateway.affinity": {"nodeSelector": {"pool": "gw"}}}, "/gateway/affinity"),
        ({"operator.affinity": {"podAntiAffinity": {"required": []}}},
         "/operator/affinity/podAntiAffinity"),
        # the operator reads a preview's result from its finished Job's pod: a Job the TTL
        # controller removes at once fails the preview (PreviewJobMissing)
        ({"gateway.jobTTLSecondsAfterFinished": 0}, "/gateway/jobTTLSecondsAfterFinished"),
        ({"gateway.jobTTLSecondsAfterFinished": 299}, "/gateway/jobTTLSecondsAfterFinished"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    result = helm(*template_args("test", values, namespace=NS), check=False)
    assert result.returncode != 0, "helm accepted invalid values"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "image"),
    [
        ({}, DEFAULT_GATEWAY_IMAGE),
        ({"image.repository": "registry.local:5000/team/wingman", "image.tag": "1.2.3-rc.1"},
         "registry.local:5000/team/wingman:1.2.3-rc.1"),
        ({"image.digest": "sha256:" + "a" * 64},
         "ghcr.io/wingman-dev/wingman@sha256:" + "a" * 64),
        # a pinned digest is what runs and what admission compares; the tag is not used
        ({"image.tag": "9.9.9", "image.digest": "sha256:" + "b" * 64},
         "ghcr.io/wingman-dev/wingman@sha256:" + "b" * 64),
    ],
)
def test_one_image_reference_runs_everywhere_and_is_what_admission_pins(
        values: dict[str, Any], image: str) -> None:
    objs = render("test", values, namespace=NS)
    deployment = find(objs, "Deployment")[0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert _env(deployment)["WINGMAN_GATEWAY_IMAGE"] == image
    (verify,) = find(objs, "Pod", "wingman-verify-privileges")
    assert verify["spec"]["containers"][0]["image"] == image
    for policy in (f"wingman-{NS}-gateway-pods", f"wingman-{NS}-gateway-jobs"):
        (vap,) = find(objs, "ValidatingAdmissionPolicy", policy)
        pinned = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}["image"]
        assert pinned == f'"{image}"'


def test_the_tag_defaults_to_the_app_version() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert yaml.safe_load((CHART_DIR / "values.yaml").read_text())["image"]["tag"] == ""
    assert DEFAULT_GATEWAY_IMAGE == f"ghcr.io/wingman-dev/wingman:{chart['appVersion']}"


def test_prd_pins_the_image_by_digest() -> None:
    image = env_values("prd")["image"]
    assert image["digest"].startswith("sha256:") and "tag" not in image
    objs = render("prd", namespace="wingman-prd")
    pinned = _env(find(objs, "Deployment")[0])["WINGMAN_GATEWAY_IMAGE"]
    assert pinned == f"{image['repository']}@{image['digest']}"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"policy.tokenTTLSeconds": 1000, "policy.maxTokenTTLSeconds": 900},
         "policy.tokenTTLSeconds (1000) must not exceed policy.maxTokenTTLSeconds (900)"),
        ({"policy.panel.threshold": 5}, "policy.panel.threshold (5) must not exceed"),
        ({"policy.panel.quorum": 9}, "policy.panel.quorum (9) must not exceed"),
        ({"gateway.targets": [{"namespace": NS}]},
         f'gateway.targets must not list the release namespace "{NS}"'),
        ({"gateway.targets": [{"namespace": "apps"}, {"namespace": "apps"}]},
         'gateway.targets lists namespace "apps" twice'),
        # values valid alone that cannot work together
        ({"operator.replicas": 2, "operator.leaderElection.enabled": False},
         "operator.replicas is 2 but operator.leaderElection.enabled is false"),
        ({"operator.leaderElection.retryPeriodSeconds": 9},
         "operator.leaderElection needs retryPeriodSeconds (9) < renewDeadlineSeconds (7) < "
         "leaseDurationSeconds (10)"),
        ({"operator.leaderElection.leaseDurationSeconds": 7},
         "renewDeadlineSeconds (7) < leaseDurationSeconds (7)"),
        ({"operator.healthPort": 9090},
         "operator.healthPort and operator.metricsPort are both 9090"),
        ({"chat.enabled": True, "chat.webhook": {"enabled": True, "url": "https://h.example/w"},
          "chat.httpPort": 9090}, "chat.httpPort and chat.metricsPort are both 9090"),
        ({"metrics.serviceMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "1m"}},
         "metrics.serviceMonitor.scrapeTimeout (1m) must not exceed"),
        ({"metrics.serviceMonitor": {"enabled": True, "interval": "0s", "scrapeTimeout": "0s"}},
         "must be longer than zero"),
        # a request above its limit: for the gateway, every grant's Job would be refused
        ({"gateway.resources": {"requests": {"memory": "512Mi"}}},
         "gateway.resources.requests.memory (512Mi) is more than gateway.resources.limits.memory "
         "(256Mi)"),
        ({"operator.resources": {"requests": {"cpu": "301m"}, "limits": {"cpu": "0.3"}}},
         "operator.resources.requests.cpu (301m) is more than"),
        ({"chat.resources": {"requests": {"memory": "300e6"}}},
         "chat.resources.requests.memory (300e6) is more than"),
        # one name, one object: the token-signing key never shares a Secret with another key,
        # nor with the Secret the chat pod mounts whole
        ({"audit.checkpoints.keySecret": "wingman-signing-key"},
         'operator.signingKeySecret and audit.checkpoints.keySecret both name the Secret '
         '"wingman-signing-key"'),
        ({"chat.enabled": True, "chat.webhook": {"enabled": True, "url": "https://h.example/w"},
          "chat.secretName": "wingman-signing-key"},
         'operator.signingKeySecret and chat.secretName both name the Secret'),
        ({"operator.votersSecret": "wingman-audit-key"},
         'audit.checkpoints.keySecret and operator.votersSecret both name the Secret'),
        ({"chat.enabled": True, "chat.webhook": {"enabled": True, "url": "https://h.example/w"},
          "operator.votersSecret": "wingman-chat"},
         'chat.secretName and operator.votersSecret both name the Secret "wingman-chat"'),
        ({"operator.publicKeysConfigMap": "wingman-audit-checkpoints"},
         'operator.publicKeysConfigMap and audit.checkpoints.configMap both name the ConfigMap'),
        ({"audit.checkpoints.configMap": "wingman-policy"},
         "give audit.checkpoints.configMap another name"),
        # workers and approvers are never everyone, nor the chart's own identities
        ({"rbac.approvers.groups": ["system:authenticated"]},
         'rbac.approvers.groups lists "system:authenticated"'),
        ({"rbac.workers.groups": ["system:unauthenticated"]},
         'rbac.workers.groups lists "system:unauthenticated"'),
        ({"rbac.approvers.groups": [f"system:serviceaccounts:{NS}"]},
         f'rbac.approvers.groups lists "system:serviceaccounts:{NS}"'),
        ({"rbac.workers.users": ["system:anonymous"]},
         'rbac.workers.users lists "system:anonymous"'),
        ({"rbac.approvers.users": [f"system:serviceaccount:{NS}:wingman-chat"]},
         f'rbac.approvers.users lists "system:serviceaccount:{NS}:wingman-chat"'),
        ({"rbac.approvers.serviceAccounts": [{"name": "wingman-gateway"}]},
         f"rbac.approvers.serviceAccounts lists {NS}/wingman-gateway, the chart's own identity"),
        ({"rbac.workers.serviceAccounts": [{"name": "wingman-operator", "namespace": NS}]},
         f"rbac.workers.serviceAccounts lists {NS}/wingman-operator"),
        # the identity approved commands run as holds nothing in the release namespace
        ({"rbac.approvers.serviceAccounts": [{"name": "wingman-executor"}]},
         f"rbac.approvers.serviceAccounts lists {NS}/wingman-executor, the chart's own identity"),
        ({"rbac.workers.users": [f"system:serviceaccount:{NS}:wingman-executor"]},
         f'rbac.workers.users lists "system:serviceaccount:{NS}:wingman-executor"'),
        # keys of label, annotation and node selector maps are valid and never replace the
        # chart's own labels (a pod template's app.kubernetes.io/instance that is not the
        # selector's would make the Deployment invalid)
        ({"commonLabels": {"bad key!": "x"}},
         'commonLabels: "bad key!" is not a valid label key'),
        ({"commonLabels": {"Example.com/team": "x"}},
         'commonLabels: "Example.com/team" is not a valid label key'),
        ({"commonLabels": {"app.kubernetes.io/name": "other"}},
         'commonLabels: "app.kubernetes.io/name" is a key the chart sets itself'),
        ({"commonLabels": {"wingman.dev/environment": "prd"}},
         'commonLabels: "wingman.dev/environment" is a key the chart sets itself'),
        ({"operator.podLabels": {"app.kubernetes.io/instance": "other"}},
         'operator.podLabels: "app.kubernetes.io/instance" is a key the chart sets itself'),
        ({"operator.podAnnotations": {"wingman.dev/policy-checksum": "0"}},
         'operator.podAnnotations: "wingman.dev/policy-checksum" is a key the chart sets'),
        ({"operator.podAnnotations": {"log shipper": "on"}},
         'operator.podAnnotations: "log shipper" is not a valid annotation key'),
        ({"gateway.podAnnotations": {"a/b/c": "d"}},
         'gateway.podAnnotations: "a/b/c" is not a valid annotation key'),
        # no annotation that takes the pods' AppArmor profile away (the API server applies it)
        ({"gateway.podAnnotations": {
            "container.apparmor.security.beta.kubernetes.io/gateway": "unconfined"}},
         'gateway.podAnnotations: "container.apparmor.security.beta.kubernetes.io/gateway" is '
         '"unconfined": the API server applies this (deprecated) AppArmor annotation'),
        ({"operator.podAnnotations": {
            "container.apparmor.security.beta.kubernetes.io/operator": "localhost/loose"}},
         'operator.podAnnotations: "container.apparmor.security.beta.kubernetes.io/operator" '
         'is "localhost/loose"'),
        ({"gateway.podAnnotations": {
            "container.apparmor.security.beta.kubernetes.io/preview": "unconfined"}},
         'gateway.podAnnotations: "container.apparmor.security.beta.kubernetes.io/preview" is '
         '"unconfined"'),
        # the API server refuses a pod template whose AppArmor annotation names a container
        # it does not have: a sidecar injected later, or the gateway's in a preview pod
        ({"operator.podAnnotations": {
            "container.apparmor.security.beta.kubernetes.io/istio-proxy": "unconfined"}},
         'operator.podAnnotations: "container.apparmor.security.beta.kubernetes.io/istio-proxy" '
         'names container "istio-proxy", but these annotations go on the operator pod '
         "(container operator): the API server refuses a pod or pod template whose AppArmor "
         "annotation names a container it does not have (container not found)"),
        ({"gateway.podAnnotations": {
            "container.apparmor.security.beta.kubernetes.io/gateway": "runtime/default"}},
         'gateway.podAnnotations: "container.apparmor.security.beta.kubernetes.io/gateway" '
         'names container "gateway", but these annotations go on gateway pods (container '
         "gateway) and preview pods (container preview)"),
        ({"gateway.podAnnotations": {
            "container.apparmor.security.beta.kubernetes.io/preview": "runtime/default"}},
         'names container "preview", but these annotations go on gateway pods'),
        ({"gateway.nodeSelector": {"-pool": "gw"}},
         'gateway.nodeSelector: "-pool" is not a valid node label key'),
        ({"chat.nodeSelector": {"p" * 64: "gw"}}, "chat.nodeSelector: "),
        ({"metrics.prometheusRule.labels": {"app.kubernetes.io/component": "rules"}},
         'metrics.prometheusRule.labels: "app.kubernetes.io/component" is a key the chart'),
        ({"metrics.dashboard.labels": {"grafana_dashboard": "0"}},
         'metrics.dashboard.labels: "grafana_dashboard" is a key the chart sets itself'),
        ({"metrics.dashboard.annotations": {"grafana folder": "Wingman"}},
         'metrics.dashboard.annotations: "grafana folder" is not a valid annotation key'),
        # a finished preview Job must outlive the sweep's next look at its request
        ({"gateway.jobTTLSecondsAfterFinished": 600, "operator.resyncSeconds": 900},
         "gateway.jobTTLSecondsAfterFinished (600) must be at least operator.resyncSeconds + "
         "operator.sweepIntervalSeconds (910)"),
    ],
)
def test_inconsistent_values_fail_with_instructions(
    values: dict[str, Any], complaint: str,
) -> None:
    result = helm(*template_args("test", values, namespace=NS), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_postgres_audit_without_secret_fails_with_instructions() -> None:
    result = helm(*template_args("prd", {"audit.postgres.secretName": ""}, namespace=NS),
                  check=False)
    assert result.returncode != 0
    assert "audit.postgres.secretName is empty" in result.stderr


@pytest.mark.parametrize("path", ["/opt/audit/audit.jsonl", "/etc/audit.jsonl", "/audit.jsonl",
                                  "/etc/wingman/audit.jsonl", "/var/./audit/audit.jsonl",
                                  "/var/lib/../../usr/a.jsonl"])
def test_an_audit_file_gateway_pods_could_not_mount_fails_with_instructions(path: str) -> None:
    """Gateway pods mount the audit claim at the file's directory, and admission refuses mounts
    over the image's code and system paths: such a path would refuse every grant's Job."""
    result = helm(*template_args("test", {"audit.file.path": path}, namespace=NS), check=False)
    assert result.returncode != 0
    assert f'audit.file.path "{path}" is in' in result.stderr, result.stderr
    assert "put the file in a directory such as /var/lib/wingman/audit" in result.stderr


@pytest.mark.parametrize("path", ["/var/lib/wingman/audit/audit.jsonl", "/data/audit.jsonl",
                                  "/etc/wingman/audit/audit.jsonl", "/var/lib/.w/a.jsonl"])
def test_an_audit_file_outside_system_paths_renders(path: str) -> None:
    render("test", {"audit.file.path": path}, namespace=NS)


def test_an_existing_audit_claim_is_what_every_pod_mounts() -> None:
    claim = "audit.0-claim"
    objs = render("test", {"audit.file.persistence.existingClaim": claim,
                           "chat.enabled": True,
                           "chat.webhook": {"enabled": True, "url": "https://h.example/w"}},
                  namespace=NS)
    assert find(objs, "PersistentVolumeClaim") == []
    for name in ("wingman-operator", "wingman-chat"):
        (deployment,) = find(objs, "Deployment", name)
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["audit"]["persistentVolumeClaim"] == {"claimName": claim}
    assert _env(find(objs, "Deployment", "wingman-operator")[0])[
        "WINGMAN_AUDIT_VOLUME_CLAIM"] == claim


def test_a_witness_without_its_hmac_secret_fails_with_instructions() -> None:
    result = helm(*template_args("test", {"audit.checkpoints.witness.url":
                                          "https://witness.example/checkpoints"},
                                 namespace=NS), check=False)
    assert result.returncode != 0
    assert "audit.checkpoints.witness.secretName is empty" in result.stderr


SECRET = "s3cr3t-Pa55"


def _llm_voter(base_url: str) -> dict[str, Any]:
    """Values with one OpenAI voter at ``base_url`` (and what an LLM voter needs besides)."""
    return {"operator.votersSecret": "llm-keys", "policy.panel.threshold": 1,
            "policy.panel.quorum": 1,
            "policy.panel.voters": [{"type": "openai", "name": "gpt", "model": "m",
                                     "apiKeySecretKey": "openai", "baseURL": base_url}]}


def _witness(url: str) -> dict[str, Any]:
    return {"audit.checkpoints.witness.url": url, "audit.checkpoints.witness.secretName": "w"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (_witness(f"https://alice:{SECRET}@w.example/c"),
         "audit.checkpoints.witness.url has credentials (user:password@); remove them"),
        (_witness(f"https://{SECRET}@w.example/c"),
         "audit.checkpoints.witness.url has credentials"),
        (_witness(f"ftp://alice:{SECRET}@w.example/c"),
         "audit.checkpoints.witness.url has credentials"),
        (_llm_voter(f"https://alice:{SECRET}@llm.example/v1"),
         "policy.panel.voters[0].baseURL has credentials (user:password@); remove them"),
        (_llm_voter(f"http://{SECRET}@llm.example"),
         "policy.panel.voters[0].baseURL has credentials"),
        # a password with an unencoded '/', '?' or '#': the userinfo runs to the last '@'
        (_llm_voter(f"https://alice:{SECRET}/x@llm.example/v1"),
         "policy.panel.voters[0].baseURL has credentials"),
        (_llm_voter(f"https://alice:{SECRET}?x@llm.example/v1"),
         "policy.panel.voters[0].baseURL has credentials"),
        (_witness(f"https://alice:{SECRET}/x#y@w.example/c"),
         "audit.checkpoints.witness.url has credentials"),
        # whatever else is wrong with a URL, the refusal does not repeat it either
        (_witness(f"https://w.example/c?token={SECRET}#x"),
         "audit.checkpoints.witness.url must be an http(s) URL"),
        (_llm_voter(f"https://llm.example/v1?key={SECRET}"),
         "policy.panel.voters[0].baseURL must be an http(s) URL"),
    ],
    ids=lambda v: str(v)[:50],
)
def test_a_url_with_credentials_is_refused_without_repeating_them(
    values: dict[str, Any], complaint: str,
) -> None:
    result = helm(*template_args("test", values, namespace=NS), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert "alice" not in result.stderr + result.stdout


@pytest.mark.parametrize("values", [_witness(f"https://alice:{SECRET}@w.example/c"),
                                    _llm_voter(f"https://alice:{SECRET}@llm.example/v1")],
                         ids=["witness", "voter"])
def test_other_schema_errors_still_fail_and_do_not_repeat_a_credential(
    values: dict[str, Any],
) -> None:
    result = helm(*template_args("test", {**values, "logging.level": "verbose"}, namespace=NS),
                  check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "/logging/level" in result.stderr, result.stderr
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize("url", ["ftp://w.example/c", "witness", "https://w.example/a b"])
def test_a_witness_url_must_be_http(url: str) -> None:
    result = helm(*template_args("test", _witness(url), namespace=NS), check=False)
    assert result.returncode != 0
    assert "audit.checkpoints.witness.url must be an http(s) URL" in result.stderr


@pytest.mark.parametrize("url", ["https://w.example/c", "http://10.0.0.5:8080/checkpoints?x=1"])
def test_a_plain_witness_url_renders(url: str) -> None:
    objs = render("test", _witness(url), namespace=NS)
    assert _env(find(objs, "Deployment", "wingman-operator")[0])[
        "WINGMAN_AUDIT_WITNESS_URL"] == url


def test_a_plain_voter_base_url_renders() -> None:
    objs = render("test", _llm_voter("https://llm.example/v1/team@eu"), namespace=NS)
    (cm,) = find(objs, "ConfigMap", "wingman-policy")
    assert "https://llm.example/v1/team@eu" in str(cm["data"])


def _timed_panel(voter_timeout: float | None, panel_timeout: float | None) -> dict[str, Any]:
    """Values with one OpenAI voter, its timeoutSeconds and the panel's (None: unset)."""
    values = _llm_voter("https://llm.example/v1")
    if voter_timeout is not None:
        values["policy.panel.voters"][0]["timeoutSeconds"] = voter_timeout
    if panel_timeout is not None:
        values["policy.panel.timeoutSeconds"] = panel_timeout
    return values


@pytest.mark.parametrize(
    ("voter_timeout", "panel_timeout", "complaint"),
    [(120, None, "policy.panel.voters[0] (gpt).timeoutSeconds is 120, more than "
                 "policy.panel.timeoutSeconds (30): the panel stops waiting for every voter "
                 "after 30 s, so the voter would abstain (Timeout) before its own timeout; raise "
                 "policy.panel.timeoutSeconds to at least 120 (at most 300), or lower the "
                 "voter's timeoutSeconds"),
     (None, 10, "policy.panel.voters[0] (gpt).timeoutSeconds is 20 (its default), more than "
                "policy.panel.timeoutSeconds (10)"),
     (60.5, 60, "timeoutSeconds is 60.5, more than policy.panel.timeoutSeconds (60)")],
    ids=["voter-120-panel-default", "voter-default-panel-10", "voter-60.5-panel-60"],
)
def test_a_voter_timeout_the_panel_would_cut_short_is_refused(
    voter_timeout: float | None, panel_timeout: float | None, complaint: str,
) -> None:
    result = helm(*template_args("test", _timed_panel(voter_timeout, panel_timeout),
                                 namespace=NS), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize("panel_timeout", [0, 301, "30"])
def test_the_panel_timeout_is_bounded(panel_timeout: object) -> None:
    result = helm(*template_args("test", {"policy.panel.timeoutSeconds": panel_timeout},
                                 namespace=NS), check=False)
    assert result.returncode != 0
    assert "/policy/panel/timeoutSeconds" in result.stderr, result.stderr


@pytest.mark.parametrize(("voter_timeout", "panel_timeout"), [(120, 120), (None, 20)])
def test_the_panel_timeout_reaches_the_operator_policy(
    voter_timeout: float | None, panel_timeout: float | None,
) -> None:
    objs = render("test", _timed_panel(voter_timeout, panel_timeout), namespace=NS)
    (cm,) = find(objs, "ConfigMap", "wingman-policy")
    policy = EnvironmentPolicy.from_dict(yaml.safe_load(cm["data"]["policy.yaml"]))
    assert policy.panel.timeout_seconds == (panel_timeout or 30)


def test_checkpoint_values_configure_the_operator_and_mount_the_witness_key() -> None:
    objs = render("test", {"audit.checkpoints.intervalSeconds": 30,
                           "audit.checkpoints.keep": 100,
                           "audit.checkpoints.witness.url": "https://w.example/c",
                           "audit.checkpoints.witness.secretName": "witness-hmac",
                           "audit.checkpoints.witness.secretKey": "key"}, namespace=NS)
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    variables = _env(deployment)
    assert variables["WINGMAN_AUDIT_CHECKPOINT_INTERVAL_SECONDS"] == "30"
    assert variables["WINGMAN_AUDIT_CHECKPOINTS_KEPT"] == "100"
    assert variables["WINGMAN_AUDIT_WITNESS_URL"] == "https://w.example/c"
    assert variables["WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE"] == "/etc/wingman/witness/hmac-key"
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "witness-hmac"]
    assert volume["secret"]["items"] == [{"key": "key", "path": "hmac-key"}]
    policies = {p["metadata"]["name"]: p for p in find(objs, "ValidatingAdmissionPolicy")}
    (condition,) = policies[f"wingman-{NS}-audit-checkpoints"]["spec"]["matchConditions"]
    assert '"wingman-audit-checkpoints"' in condition["expression"]


# --------------------------------------------------------------------------- labels


def test_every_object_carries_the_labels(rendered: Rendered) -> None:
    env, objs = rendered
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in REQUIRED_LABELS if k not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["wingman.dev/environment"] == (env or "test")
        assert labels["app.kubernetes.io/name"] == "wingman"
    for deploy in find(objs, "Deployment"):
        pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert set(REQUIRED_LABELS) <= set(pod_labels)
        assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# --------------------------------------------------------------------------- RBAC


def test_no_role_grants_exec_wildcards_or_escalation(
    rendered: Rendered,
) -> None:
    _, objs = rendered
    for role, rule in _rules(objs):
        where = f"{role['kind']}/{role['metadata']['name']}"
        if (role["kind"], role["metadata"]["name"]) == ("Role", "wingman-gateway") and \
                rule.get("resources") == ["serviceaccounts/token"]:
            # the one exception: the gateway requests tokens of the executor account only
            assert role["metadata"]["namespace"] == NS
            assert rule == {"apiGroups": [""], "resources": ["serviceaccounts/token"],
                            "resourceNames": ["wingman-executor"], "verbs": ["create"]}
            continue
        assert not DANGEROUS_RESOURCES & set(rule.get("resources", [])), where
        assert not DANGEROUS_VERBS & set(rule["verbs"]), where
        assert "*" not in rule.get("apiGroups", []), where


def test_only_the_executor_and_the_dry_run_preview_get_rights_in_target_namespaces(
    rendered: Rendered,
) -> None:
    _, objs = rendered
    outside = [o for o in objs if o["kind"] in ("Role", "RoleBinding")
               and o["metadata"]["namespace"] != NS]
    assert {o["metadata"]["namespace"] for o in outside} == {"apps"}
    subjects = {}
    for binding in find(objs, "RoleBinding"):
        if binding["metadata"]["namespace"] == NS:
            continue
        (subject,) = binding["subjects"]
        assert subject["kind"] == "ServiceAccount" and subject["namespace"] == NS
        subjects[subject["name"]] = binding["roleRef"]["name"]
    assert set(subjects) == {"wingman-executor", "wingman-preview"}
    # the preview holds exactly the executor's rules there (a dry run is authorized like the
    # write), and an admission policy refuses everything it sends that is not a dry run
    (executor,) = find(objs, "Role", subjects["wingman-executor"], "apps")
    (preview,) = find(objs, "Role", subjects["wingman-preview"], "apps")
    assert preview["rules"] == executor["rules"]
    # the executor holds nothing in the release namespace, nor anywhere at cluster scope
    executor_bindings = [
        b for b in objs if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and any(s.get("name") == "wingman-executor" for s in b.get("subjects") or [])]
    assert {b["metadata"].get("namespace") for b in executor_bindings} == {"apps"}
    (dry,) = find(objs, "ValidatingAdmissionPolicy", f"wingman-{NS}-preview-dry-run")
    assert [v["expression"] for v in dry["spec"]["validations"]] == ["request.dryRun == true"]
    # Cluster-wide rights are read-only, review-only or the virtual 'approve' right.
    for role, rule in _rules(objs):
        if role["kind"] != "ClusterRole":
            continue
        verbs = set(rule["verbs"])
        resources = set(rule["resources"])
        assert (
            verbs <= {"get", "list", "watch"}
            or (resources == {"subjectaccessreviews"} and verbs == {"create"})
            or (rule["apiGroups"] == ["wingman.dev"] and resources == {"environments"}
                and verbs == {"approve"} and rule.get("resourceNames"))
        ), f"ClusterRole/{role['metadata']['name']} grants {rule}"


def test_gateway_default_rules_cover_restart_and_scale_only() -> None:
    # the render also proves the defaults pass the chart's check of target rules
    objs = render("test", RENDER_VALUES, namespace=NS)
    (role,) = find(objs, "Role", f"wingman-{NS}-gateway", namespace="apps")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("deployments", "get"), ("deployments", "patch"),
            ("deployments/scale", "patch")} <= granted
    assert all(r in {"deployments", "deployments/scale", "replicasets"} for r, _ in granted)
    assert not any(v in {"create", "delete", "deletecollection"} for _, v in granted)


def _rule(resources: list[str], verbs: list[str], group: str = "") -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


SAFE_RULE = _rule(["configmaps"], ["get", "list"])


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        (_rule(["pods/exec"], ["create"]), "create on pods/exec: runs any command in any pod"),
        # websocket exec is authorized as get: any verb on a stream counts
        (_rule(["pods/exec"], ["get"]), "get on pods/exec"),
        (_rule(["pods/attach"], ["create"]), "create on pods/attach"),
        (_rule(["pods/portforward"], ["create"]), "create on pods/portforward"),
        (_rule(["pods/proxy"], ["get"]), "get on pods/proxy"),
        (_rule(["pods/ephemeralcontainers"], ["patch"]), "patch on pods/ephemeralcontainers"),
        (_rule(["pods/binding"], ["create"]),
         "create on pods/binding: places a pending pod on a node of the caller's choosing"),
        (_rule(["bindings"], ["create"]), "create on bindings: places a pending pod on a node"),
        (_rule(["services/proxy"], ["get"]), "get on services/proxy"),
        (_rule(["nodes/proxy"], ["get"]), "get on nodes/proxy"),
        (_rule(["serviceaccounts/token"], ["create"]),
         "create on serviceaccounts/token: mints tokens of any ServiceAccount"),
        (_rule(["secrets"], ["get"]), "get on secrets: reads or writes the namespace's Secrets"),
        (_rule(["secrets"], ["list"]), "list on secrets"),
        (_rule(["secrets"], ["create", "patch"]), "create/patch on secrets"),
        (_rule(["pods"], ["create"]), "create on pods: starts pods that may run as any "
                                      "ServiceAccount"),
        (_rule(["replicationcontrollers"], ["create"]), "create on replicationcontrollers"),
        (_rule(["deployments"], ["create"], "apps"), "create on deployments"),
        (_rule(["daemonsets"], ["create"], "apps"), "create on daemonsets"),
        (_rule(["statefulsets"], ["create"], "apps"), "create on statefulsets"),
        (_rule(["replicasets"], ["create"], "apps"), "create on replicasets"),
        (_rule(["jobs"], ["create"], "batch"), "create on jobs"),
        (_rule(["cronjobs"], ["create"], "batch"), "create on cronjobs"),
        (_rule(["pods"], ["patch"]), "update/patch on pods: swaps a running pod's image"),
        (_rule(["pods"], ["update"]), "update/patch on pods"),
        (_rule(["rolebindings"], ["create"], "rbac.authorization.k8s.io"),
         "create on rolebindings: RBAC objects hand out any right"),
        (_rule(["roles"], ["patch"], "rbac.authorization.k8s.io"), "patch on roles"),
        (_rule(["serviceaccounts"], ["impersonate"]), "verb impersonate: acts as another identity"),
        (_rule(["roles"], ["escalate"], "rbac.authorization.k8s.io"),
         "verb escalate: grants rights the executor does not hold itself"),
        (_rule(["roles"], ["bind"], "rbac.authorization.k8s.io"), "verb bind"),
        # matched whatever the group: a wrong or made-up group does not slip it through
        (_rule(["secrets"], ["get"], "apps"), "get on secrets"),
        # traffic: a Service, its endpoints or a NetworkPolicy redirect or unshield other
        # workloads' traffic
        (_rule(["services"], ["create"]),
         "create on services: a Service's selector, externalIPs or ExternalName send traffic "
         "meant for other workloads anywhere"),
        (_rule(["services"], ["get", "patch", "update"]), "patch/update on services"),
        (_rule(["services/status"], ["patch"]), "patch on services/status"),
        (_rule(["endpoints"], ["create"]),
         "create on endpoints: points a Service's traffic, other workloads' among it, at any "
         "address"),
        (_rule(["endpointslices"], ["update"], "discovery.k8s.io"), "update on endpointslices"),
        (_rule(["networkpolicies"], ["delete"], "networking.k8s.io"),
         "delete on networkpolicies: removes or widens what shields other workloads' pods"),
        (_rule(["networkpolicies"], ["deletecollection"], "networking.k8s.io"),
         "deletecollection on networkpolicies"),
        (_rule(["ingresses"], ["create", "patch"], "networking.k8s.io"),
         "create/patch on ingresses: routes outside traffic to any Service of the namespace"),
        (_rule(["httproutes"], ["create"], "gateway.networking.k8s.io"),
         "create on httproutes: routes a Gateway's traffic"),
        (_rule(["grpcroutes", "tlsroutes"], ["update"], "gateway.networking.k8s.io"),
         "update on tlsroutes"),
        (_rule(["referencegrants"], ["create"], "gateway.networking.k8s.io"),
         "create on referencegrants: lets routes of other namespaces send traffic"),

        # custom resources whose controllers start pods with any ServiceAccount
        (_rule(["rollouts"], ["create"], "argoproj.io"),
         "create on rollouts.argoproj.io: starts pods (through its controller) that may run as "
         "any ServiceAccount of the namespace"),
        (_rule(["workflows", "configmaps"], ["get", "create"], "argoproj.io"),
         "create on workflows.argoproj.io"),
        (_rule(["scaledjobs"], ["create"], "keda.sh"), "create on scaledjobs.keda.sh"),
        (_rule(["taskruns", "pipelineruns"], ["create"], "tekton.dev"),
         "create on pipelineruns.tekton.dev"),
        (_rule(["services"], ["create"], "serving.knative.dev"),
         "create on services.serving.knative.dev: starts pods"),
        (_rule(["virtualmachines"], ["create"], "kubevirt.io"),
         "create on virtualmachines.kubevirt.io"),
    ],
    ids=lambda v: str(v)[:60],
)
def test_gateway_rules_that_reach_other_identities_are_refused_with_instructions(
    rule: dict[str, Any], why: str,
) -> None:
    values = {"gateway.targets": [{"namespace": "apps"},
                                  {"namespace": "batch", "rules": [SAFE_RULE, rule]}]}
    result = helm(*template_args("test", values, namespace=NS), check=False)
    assert result.returncode != 0, "a rule reaching beyond itself was rendered"
    shown = json.dumps(rule, separators=(",", ":"), sort_keys=True)
    assert f'gateway.targets: namespace "batch", rules[1] {shown}' in result.stderr, result.stderr
    assert "grants rights that reach beyond what it lists" in result.stderr
    assert why in result.stderr, result.stderr
    assert "set allowEscalatingRules: true on this target" in result.stderr


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"apiGroups": ["*"], "resources": ["deployments"], "verbs": ["get"]}, "apiGroups"),
        ({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}, "resources"),
        ({"apiGroups": ["apps"], "resources": ["deployments/*"], "verbs": ["get"]}, "resources"),
        ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}, "verbs"),
    ],
    ids=lambda v: str(v)[:60],
)
@pytest.mark.parametrize("opt_in", [False, True], ids=["plain", "opted-in"])
def test_gateway_rule_wildcards_are_refused_even_with_the_opt_in(
    rule: dict[str, Any], field: str, opt_in: bool,
) -> None:
    target: dict[str, Any] = {"namespace": "apps", "rules": [rule]}
    if opt_in:
        target["allowEscalatingRules"] = True
    result = helm(*template_args("test", {"gateway.targets": [target]}, namespace=NS),
                  check=False)
    assert result.returncode != 0
    assert 'gateway.targets: namespace "apps", rules[0]' in result.stderr, result.stderr
    assert f"in {field} grants everything it matches" in result.stderr
    assert "wildcards are never granted, not even with allowEscalatingRules" in result.stderr


def test_a_target_that_opts_in_gets_its_escalating_rules_for_the_gateway_only() -> None:
    rules = [_rule(["pods/exec"], ["create"]), _rule(["secrets"], ["get"]), SAFE_RULE,
             _rule(["deployments"], ["create"], "apps")]
    objs = render("test", {"gateway.targets": [
        {"namespace": "apps"},
        {"namespace": "debug", "allowEscalatingRules": True, "rules": rules},
        {"namespace": "shell", "allowEscalatingRules": True,
         "rules": [_rule(["pods/exec"], ["create"])]}]}, namespace=NS)
    (gateway,) = find(objs, "Role", f"wingman-{NS}-gateway", "debug")
    assert gateway["rules"] == rules
    # the preview acts before any approval, and the dry-run policy confines neither reads nor
    # impersonation: it keeps only the rules that need no opt-in
    (preview,) = find(objs, "Role", f"wingman-{NS}-preview", "debug")
    assert preview["rules"] == [SAFE_RULE]
    (preview,) = find(objs, "Role", f"wingman-{NS}-preview", "shell")
    assert preview["rules"] == []
    # the opt-in is per target: the other target keeps the default rules
    (other,) = find(objs, "Role", f"wingman-{NS}-gateway", "apps")
    assert not {"pods/exec", "secrets"} & {r for rule in other["rules"]
                                           for r in rule["resources"]}


def test_an_opt_in_no_rule_needs_is_refused() -> None:
    for target in ({"namespace": "apps", "allowEscalatingRules": True},
                   {"namespace": "apps", "allowEscalatingRules": True, "rules": [SAFE_RULE]}):
        result = helm(*template_args("test", {"gateway.targets": [target]}, namespace=NS),
                      check=False)
        assert result.returncode != 0
        assert ('gateway.targets: namespace "apps" sets allowEscalatingRules but none of its '
                "rules needs it") in result.stderr, result.stderr


def test_patching_existing_workloads_needs_no_opt_in() -> None:
    """Rollout restart, scale and image bumps patch existing controllers: deliberately allowed
    (the default rules do it); only creating them, or pods, can start a new ServiceAccount."""
    rules = [_rule(["deployments", "statefulsets", "daemonsets", "replicasets"],
                   ["get", "list", "patch", "update", "delete"], "apps"),
             _rule(["jobs", "cronjobs"], ["get", "patch", "delete"], "batch"),
             _rule(["pods"], ["get", "list", "delete"]),
             _rule(["roles", "rolebindings"], ["get", "list"], "rbac.authorization.k8s.io")]
    objs = render("test", {"gateway.targets": [{"namespace": "apps", "rules": rules}]},
                  namespace=NS)
    (role,) = find(objs, "Role", f"wingman-{NS}-gateway", "apps")
    assert role["rules"] == rules


def test_reading_services_endpoints_network_policies_and_routes_needs_no_opt_in() -> None:
    rules = [_rule(["services", "endpoints"], ["get", "list", "watch"]),
             _rule(["endpointslices"], ["get", "list"], "discovery.k8s.io"),
             _rule(["networkpolicies", "ingresses"], ["get", "list"], "networking.k8s.io"),
             _rule(["httproutes"], ["get", "list"], "gateway.networking.k8s.io")]
    objs = render("test", {"gateway.targets": [{"namespace": "apps", "rules": rules}]},
                  namespace=NS)
    (role,) = find(objs, "Role", f"wingman-{NS}-gateway", "apps")
    assert role["rules"] == rules


def test_custom_workloads_from_values_need_the_opt_in_and_other_custom_resources_do_not(
) -> None:
    """A platform team names its own pod-making kinds (gateway.customWorkloads); a custom
    resource that starts no pods (a cert-manager Certificate) is granted without the opt-in,
    and so is patching a known custom workload (an Argo Rollout's restart)."""
    create = _rule(["myjobs"], ["create"], "batch.example.com")
    ordinary = [_rule(["certificates"], ["get", "create", "delete"], "cert-manager.io"),
                _rule(["rollouts"], ["get", "patch"], "argoproj.io")]
    target = {"namespace": "apps", "rules": [*ordinary, create]}
    objs = render("test", {"gateway.targets": [target]}, namespace=NS)
    (role,) = find(objs, "Role", f"wingman-{NS}-gateway", "apps")
    assert role["rules"] == [*ordinary, create]

    named = {"gateway.targets": [target],
             "gateway.customWorkloads": ["myjobs.batch.example.com"]}
    result = helm(*template_args("test", named, namespace=NS), check=False)
    assert result.returncode != 0, "a rule creating a listed custom workload was rendered"
    assert 'gateway.targets: namespace "apps", rules[2]' in result.stderr, result.stderr
    assert ("create on myjobs.batch.example.com: starts pods (through its controller) that "
            "may run as any ServiceAccount of the namespace") in result.stderr
    assert "set allowEscalatingRules: true on this target" in result.stderr

    objs = render("test", {**named, "gateway.targets": [{**target,
                                                        "allowEscalatingRules": True}]},
                  namespace=NS)
    (role,) = find(objs, "Role", f"wingman-{NS}-gateway", "apps")
    assert role["rules"] == [*ordinary, create]
    (preview,) = find(objs, "Role", f"wingman-{NS}-preview", "apps")
    assert preview["rules"] == ordinary


def test_gateway_target_rules_come_from_values() -> None:
    rules = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "delete"]}]
    objs = render("test", {"gateway.targets": [{"namespace": "batch-ns", "rules": rules}]},
                  namespace=NS)
    roles = find(objs, "Role", namespace="batch-ns")
    assert [r["rules"] for r in roles] == [rules, rules]
    assert {r["metadata"]["name"] for r in roles} == {f"wingman-{NS}-gateway",
                                                      f"wingman-{NS}-preview"}


def test_no_target_namespace_rights_by_default() -> None:
    objs = render(None, namespace=NS)
    assert all(o["metadata"].get("namespace", NS) == NS for o in objs
               if o["kind"] in ("Role", "RoleBinding"))


def _rule_verbs(objs: list[dict[str, Any]], role: str, resource: str) -> set[str]:
    (obj,) = find(objs, "Role", role, NS)
    return {v for r in obj["rules"] if resource in r["resources"] for v in r["verbs"]}


@pytest.mark.parametrize(("may_grant", "expected"), [(True, True), (False, False)])
def test_workers_create_grants_only_when_policy_allows(may_grant: bool, expected: bool) -> None:
    objs = render("test", {**RENDER_VALUES, "policy.workersMayGrant": may_grant}, namespace=NS)
    assert ("create" in _rule_verbs(objs, "wingman-worker", "executiongrants")) is expected


def test_worker_role_is_exactly_ask_and_read() -> None:
    objs = render("test", RENDER_VALUES, namespace=NS)
    (worker,) = find(objs, "Role", "wingman-worker", NS)
    resources = {r for rule in worker["rules"] for r in rule["resources"]}
    assert resources == {"approvalrequests", "executiongrants", "events", "configmaps"}
    assert _rule_verbs(objs, "wingman-worker", "approvalrequests") == {
        "create", "get", "list", "watch"}
    assert _rule_verbs(objs, "wingman-worker", "events") == {"get", "list"}
    # the policy ConfigMap and nothing else: agents read what can pass
    (cm_rule,) = [r for r in worker["rules"] if "configmaps" in r["resources"]]
    assert cm_rule == {"apiGroups": [""], "resources": ["configmaps"],
                       "resourceNames": ["wingman-policy"], "verbs": ["get"]}


def test_secrets_and_jobs_belong_to_the_operator_only(
    rendered: Rendered,
) -> None:
    _, objs = rendered
    for role, rule in _rules(objs):
        touches = {"secrets", "jobs", "pods"} & set(rule["resources"])
        if role["metadata"]["name"] == "wingman-gateway" and touches == {"jobs"}:
            # it reads its own Job's deadline, nothing more
            assert rule["verbs"] == ["get"] and rule["resources"] == ["jobs"]
            continue
        if touches and role["metadata"]["name"] not in ("wingman-operator", "wingman-verifier"):
            pytest.fail(f"{role['kind']}/{role['metadata']['name']} grants {sorted(touches)}")
        if role["metadata"]["name"] == "wingman-verifier":
            assert set(rule["verbs"]) <= {"get", "list"}
    operator_pods = {v for role, r in _rules(objs) if role["metadata"]["name"] ==
                     "wingman-operator" and "pods" in r["resources"] for v in r["verbs"]}
    # it reads pods (a preview Job's result is its pod's termination message), nothing more
    assert operator_pods <= {"get", "list"}, "the operator must not create pods directly"


def test_approvers_get_approve_on_their_environment_only() -> None:
    for env in ENVIRONMENTS:
        objs = render(env, RENDER_VALUES, namespace=f"wingman-{env}")
        (role,) = find(objs, "ClusterRole", f"wingman-wingman-{env}-approver")
        assert role["rules"] == [{"apiGroups": ["wingman.dev"], "resources": ["environments"],
                                  "resourceNames": [env], "verbs": ["approve"]}]
        (binding,) = find(objs, "ClusterRoleBinding", f"wingman-wingman-{env}-approver")
        groups = {s["name"] for s in binding["subjects"] if s["kind"] == "Group"}
        assert groups == set(env_values(env)["rbac"]["approvers"]["groups"])


def test_subjects_from_values_are_bound() -> None:
    objs = render("test", {
        "rbac.workers.users": ["agent-1"],
        "rbac.workers.serviceAccounts": [{"name": "agent", "namespace": "agents"},
                                         {"name": "local-agent"}],
    }, namespace=NS)
    (binding,) = find(objs, "RoleBinding", "wingman-worker", NS)
    assert {"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
            "name": "agent-1"} in binding["subjects"]
    assert {"kind": "ServiceAccount", "name": "agent",
            "namespace": "agents"} in binding["subjects"]
    assert {"kind": "ServiceAccount", "name": "local-agent",
            "namespace": NS} in binding["subjects"]


def test_gateway_and_preview_pods_may_hold_tokens_no_longer_than_the_operator_gives_them(
    rendered: Rendered,
) -> None:
    """The pod and Job policies refuse a serviceAccountToken projection that lives longer than
    the one the operator builds (manifests.SERVICE_ACCOUNT_TOKEN_SECONDS), and no shorter."""
    from wingman.operator.manifests import SERVICE_ACCOUNT_TOKEN_SECONDS

    _, objs = rendered
    for role in ("gateway", "preview"):
        for kind in ("pods", "jobs"):
            policy = next(p for p in find(objs, "ValidatingAdmissionPolicy")
                          if p["metadata"]["name"] == f"wingman-{NS}-{role}-{kind}")
            (long_tokens,) = [v["expression"] for v in policy["spec"]["variables"]
                              if v["name"] == "longTokens"]
            assert f"s.serviceAccountToken.expirationSeconds > {SERVICE_ACCOUNT_TOKEN_SECONDS})" \
                in " ".join(long_tokens.split())


def test_test_and_prd_releases_do_not_collide_on_cluster_scoped_names() -> None:
    def cluster_names(env: str) -> set[str]:
        objs = render(env, RENDER_VALUES, namespace=f"wingman-{env}")
        return {f"{o['kind']}/{o['metadata']['name']}" for o in objs
                if "namespace" not in o["metadata"] or o["metadata"]["namespace"] == "apps"}

    test, prd = cluster_names("test"), cluster_names("prd")
    assert test and prd and not test & prd


# --------------------------------------------------------------------------- admission


def test_admission_policies_are_bound_to_the_release_namespace(
    rendered: Rendered,
) -> None:
    env, objs = rendered
    policies = {p["metadata"]["name"]: p for p in find(objs, "ValidatingAdmissionPolicy")}
    assert set(policies) == {f"wingman-{NS}-approvalrequests", f"wingman-{NS}-executiongrants",
                             f"wingman-{NS}-gateway-writes", f"wingman-{NS}-gateway-pods",
                             f"wingman-{NS}-gateway-jobs", f"wingman-{NS}-preview-pods",
                             f"wingman-{NS}-preview-jobs", f"wingman-{NS}-preview-dry-run",
                             f"wingman-{NS}-audit-checkpoints", f"wingman-{NS}-metadata",
                             f"wingman-{NS}-service-account-tokens",
                             f"wingman-{NS}-operator-jobs", f"wingman-{NS}-executor-pods",
                             f"wingman-{NS}-executor-tokens",
                             f"wingman-{NS}-executor-workloads"}
    (writer,) = policies[f"wingman-{NS}-gateway-writes"]["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{NS}:wingman-gateway'" in writer["expression"]
    (executor,) = policies[f"wingman-{NS}-executor-workloads"]["spec"]["matchConditions"]
    assert f"'system:serviceaccount:{NS}:wingman-executor'" in executor["expression"]
    for policy in policies.values():
        assert policy["spec"]["failurePolicy"] == "Fail"
        for v in policy["spec"]["validations"]:
            assert v.get("message") or v.get("messageExpression")
    bindings = find(objs, "ValidatingAdmissionPolicyBinding")
    assert {b["spec"]["policyName"] for b in bindings} == set(policies)
    for b in bindings:
        assert b["spec"]["validationActions"] == ["Deny"]
        if b["spec"]["policyName"].endswith(("-preview-dry-run", "-executor-workloads")):
            # the preview and executor identities are confined everywhere (the executor acts
            # in the target namespaces only)
            assert "matchResources" not in b["spec"]
            continue
        assert b["spec"]["matchResources"]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": NS}}
    served = {v["name"]: v["expression"]
              for v in policies[f"wingman-{NS}-approvalrequests"]["spec"]["variables"]}["served"]
    assert served == f'"{env or "test"}"'
    grant_vars = {v["name"]: v["expression"]
                  for v in policies[f"wingman-{NS}-executiongrants"]["spec"]["variables"]}
    assert grant_vars["served"] == served


def test_the_operators_jobs_run_only_as_the_service_accounts_the_release_uses() -> None:
    """With the preview off, a Job of the operator's runs as the gateway or not at all."""
    for preview, accounts in ((True, '["wingman-gateway","wingman-preview"]'),
                              (False, '["wingman-gateway"]')):
        objs = render("test", {"policy.preview.enabled": preview}, namespace=NS)
        (policy,) = find(objs, "ValidatingAdmissionPolicy", f"wingman-{NS}-operator-jobs")
        (rule,) = policy["spec"]["validations"]
        assert f"variables.account in {accounts}" in rule["expression"]
        (who,) = policy["spec"]["matchConditions"]
        assert f'"system:serviceaccount:{NS}:wingman-operator"' in who["expression"]


def test_executor_workload_changes_are_refused_to_the_preview_only_when_it_exists() -> None:
    """The preview's dry runs are refused alike (approvers see it); with the preview off the
    policy names no account that the release does not have."""
    executor = f"'system:serviceaccount:{NS}:wingman-executor'"
    preview = f"'system:serviceaccount:{NS}:wingman-preview'"
    for enabled in (True, False):
        objs = render("test", {"policy.preview.enabled": enabled}, namespace=NS)
        (policy,) = find(objs, "ValidatingAdmissionPolicy", f"wingman-{NS}-executor-workloads")
        (who,) = policy["spec"]["matchConditions"]
        assert executor in who["expression"]
        assert (preview in who["expression"]) is enabled
        assert {r["operations"][0] for r in policy["spec"]["matchConstraints"]["resourceRules"]} \
            == {"UPDATE"}


def test_gateway_image_and_docker_socket_come_from_values() -> None:
    image = "ghcr.io/wingman-dev/wingman@sha256:" + "b" * 64
    objs = render("test", {"image.digest": "sha256:" + "b" * 64, "gateway.docker.enabled": True,
                           "gateway.docker.socketPath": "/run/docker.sock"}, namespace=NS)
    text = yaml.safe_dump(find(objs, "ValidatingAdmissionPolicy"))
    assert f'"{image}"' in text
    assert '"/run/docker.sock"' in text
    without = yaml.safe_dump(find(render("test", namespace=NS), "ValidatingAdmissionPolicy"))
    assert "docker.sock" not in without and "!has(v.hostPath)" in without


# --------------------------------------------------------------------------- operator


def test_operator_deployment_is_locked_down(
    rendered: Rendered,
) -> None:
    _, objs = rendered
    (deploy,) = find(objs, "Deployment", "wingman-operator")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "wingman-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["args"] == ["wingman", "operator"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # liveness: the process works; readiness: this replica acts (a standby is not ready)
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz" and ports[live["port"]] == 8080
    assert ready["path"] == "/readyz" and ports[ready["port"]] == 9090
    assert ports["metrics"] == 9090
    assert not any("hostPath" in v for v in pod["volumes"])


def test_operator_environment_variables(rendered: Rendered) -> None:
    env, objs = rendered
    variables = _env(find(objs, "Deployment", "wingman-operator")[0])
    assert variables["WINGMAN_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert variables["WINGMAN_ENVIRONMENT"] == (env or "test")
    assert variables["WINGMAN_POLICY_FILE"] == "/etc/wingman/policy/policy.yaml"
    if env != "prd":  # prd pins by digest (test_prd_pins_the_image_by_digest)
        assert variables["WINGMAN_GATEWAY_IMAGE"] == DEFAULT_GATEWAY_IMAGE
    assert variables["WINGMAN_SIGNING_KEY_SECRET"] == "wingman-signing-key"
    assert variables["WINGMAN_PUBLIC_KEYS_CONFIGMAP"] == "wingman-public-keys"
    assert variables["WINGMAN_LOG_FORMAT"] == "json"
    assert variables["WINGMAN_LOG_LEVEL"] == "info"
    assert variables["WINGMAN_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["WINGMAN_METRICS_PORT"] == "9090"
    assert variables["WINGMAN_HEALTH_PORT"] == "8080"
    assert variables["WINGMAN_LISTEN_ADDRESS"] == "0.0.0.0"  # noqa: S104 - a pod's ports
    # gateway.targets' namespaces: the review panel holds a command outside them
    assert json.loads(variables["WINGMAN_GATEWAY_TARGETS"]) == ["apps"]
    # ... and what the executor's Role grants there (apps takes the default rules)
    assert json.loads(variables["WINGMAN_GATEWAY_TARGET_RULES"]) == {"apps": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"],
         "verbs": ["get", "patch", "update"]},
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list"]}]}
    assert variables["WINGMAN_AUDIT_KEY_SECRET"] == "wingman-audit-key"
    assert variables["WINGMAN_AUDIT_CHECKPOINTS_CONFIGMAP"] == "wingman-audit-checkpoints"
    if env == "prd":
        # The DSN carries a password: a file on a Secret volume, never an env variable.
        assert "WINGMAN_AUDIT_TARGET" not in variables
        assert not any("secretKeyRef" in str(v) for v in variables.values())
        assert variables["WINGMAN_AUDIT_TARGET_FILE"] == "/etc/wingman/audit-dsn/dsn"
        pod = find(objs, "Deployment", "wingman-operator")[0]["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "audit-dsn"]
        assert volume["secret"] == {"secretName": "wingman-audit-dsn", "defaultMode": 0o400,
                                    "items": [{"key": "dsn", "path": "dsn"}]}
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "audit-dsn"]
        assert mount == {"name": "audit-dsn", "mountPath": "/etc/wingman/audit-dsn",
                         "readOnly": True}
        assert not find(objs, "PersistentVolumeClaim")
    else:
        assert variables["WINGMAN_AUDIT_TARGET"] == "/var/lib/wingman/audit/audit.jsonl"
        (pvc,) = find(objs, "PersistentVolumeClaim", "wingman-audit")
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_voters_secret_is_passed_only_when_set() -> None:
    without = _env(find(render("test", namespace=NS), "Deployment")[0])
    assert "WINGMAN_VOTERS_SECRET" not in without
    with_secret = _env(find(render("test", {"operator.votersSecret": "llm-keys"},
                                   namespace=NS), "Deployment")[0])
    assert with_secret["WINGMAN_VOTERS_SECRET"] == "llm-keys"


def test_policy_configmap_is_the_environment_policy(
    rendered: Rendered,
) -> None:
    env, objs = rendered
    (cm,) = find(objs, "ConfigMap", "wingman-policy")
    policy = yaml.safe_load(cm["data"]["policy.yaml"])
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["policy"]
    expected = {**defaults, **(env_values(env)["policy"] if env else {})}
    assert policy == {"environment": env or "test", **expected}


def test_environment_policies_match_the_brief() -> None:
    test, prd = env_values("test")["policy"], env_values("prd")["policy"]
    assert test["autoApprove"] is True and test["autoApproveMaxRisk"] == "medium"
    assert test["requiredApprovals"] == 1 and test["workersMayGrant"] is True
    assert prd["autoApprove"] is False and prd["requiredApprovals"] == 2
    assert prd["workersMayGrant"] is False
    assert prd["tokenTTLSeconds"] < test["tokenTTLSeconds"]
    assert env_values("prd")["audit"]["type"] == "postgres"
    for env in (test, prd):
        assert any("rollout restart" in p for p in env["allowlist"])
        assert any(" scale " in p for p in env["allowlist"])
        assert all(p.endswith("-n apps") for p in env["allowlist"])


def test_helm_test_pod_runs_verify_privileges() -> None:
    objs = render("test", namespace=NS)
    (pod,) = find(objs, "Pod", "wingman-verify-privileges")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"][:2] == ["wingman", "verify-privileges"]
    assert container["args"][2:4] == ["--namespace", NS]
    assert pod["spec"]["serviceAccountName"] == "wingman-verifier"
    assert not find(render("test", {"verify.enabled": False}, namespace=NS), "Pod")


def test_helm_test_expects_exactly_the_admission_policies_the_chart_renders() -> None:
    """verify-privileges fails when one of the release's policies or bindings is missing: its
    list of names is the chart's, with previews on and off, and the helm test pod tells it
    which (and may read them)."""
    for preview in (True, False):
        objs = render("test", {"policy.preview.enabled": preview}, namespace=NS)
        rendered = {p["metadata"]["name"] for p in find(objs, "ValidatingAdmissionPolicy")}
        bindings = {b["metadata"]["name"] for b in find(objs, "ValidatingAdmissionPolicyBinding")}
        expected = set(admission_policy_names(NS, preview=preview))
        assert rendered == expected and bindings == expected
        (pod,) = find(objs, "Pod", "wingman-verify-privileges")
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["WINGMAN_PREVIEW"] == str(preview).lower()
    (role,) = find(objs, "ClusterRole", f"wingman-{NS}-verifier")
    assert {"apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
            "verbs": ["get", "list"]} in role["rules"]


@pytest.mark.parametrize("env", [None, *ENVIRONMENTS], ids=["defaults", *ENVIRONMENTS])
@pytest.mark.parametrize("preview", [True, False], ids=["preview", "no-preview"])
def test_every_admission_policy_carries_the_digest_helm_test_recomputes(
    env: str | None, preview: bool,
) -> None:
    """helm test reports a policy whose content was edited since the chart rendered it: the
    digest helm puts on each policy is the one verify-privileges computes from the policy,
    for every policy the chart renders, and only policies carry one."""
    objs = render(env, {**RENDER_VALUES, "policy.preview.enabled": preview}, namespace=NS)
    policies = find(objs, "ValidatingAdmissionPolicy")
    assert {p["metadata"]["name"] for p in policies} == set(
        admission_policy_names(NS, preview=preview))
    for policy in policies:
        digest = policy["metadata"]["annotations"][CONTENT_DIGEST_ANNOTATION]
        assert digest == policy_content_digest(policy["spec"]), policy["metadata"]["name"]
    assert len({p["metadata"]["annotations"][CONTENT_DIGEST_ANNOTATION]
                for p in policies}) == len(policies)
    assert not [o for o in objs if o["kind"] != "ValidatingAdmissionPolicy"
                and CONTENT_DIGEST_ANNOTATION in (o["metadata"].get("annotations") or {})]


def test_gateway_service_account_does_not_mount_its_token_by_default() -> None:
    objs = render("test", namespace=NS)
    (gateway,) = find(objs, "ServiceAccount", "wingman-gateway")
    assert gateway["automountServiceAccountToken"] is False
    (executor,) = find(objs, "ServiceAccount", "wingman-executor")
    assert executor["automountServiceAccountToken"] is False
    (operator,) = find(objs, "ServiceAccount", "wingman-operator")
    assert operator["automountServiceAccountToken"] is True


def test_every_value_has_a_prose_comment() -> None:
    """Every leaf value (and list value) of values.yaml is preceded by a comment line."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    path: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    list_indent: int | None = None
    missing = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- ") or (list_indent is not None and indent > list_indent):
            list_indent = indent if list_indent is None else min(list_indent, indent)
            continue
        list_indent = None
        key, _, value = stripped.partition(":")
        while path and path[-1][0] >= indent:
            path.pop()
        dotted = ".".join([k for _, k in path] + [key])
        following = next((x.strip() for x in lines[i + 1:]
                          if x.strip() and not x.strip().startswith("#")), "")
        is_leaf = value.strip() != "" or following.startswith("- ")
        if not is_leaf:
            path.append((indent, key))
            continue
        if dotted.startswith(("operator.resources.", "gateway.resources.", "chat.resources.")):
            continue  # a Kubernetes resources block, described as a whole
        previous = next(x.strip() for x in reversed(lines[:i]) if x.strip())
        if not previous.startswith("#"):
            missing.append(dotted)
    assert not missing, f"values without a comment: {missing}"


def test_runtime_objects_get_the_release_labels_and_gateway_pods_their_tuning() -> None:
    """The operator receives the release's labels and the gateway pod values; the manifests it
    builds from them are tested in tests/unit/operator/test_manifests.py."""
    import json

    pod = {"nodeSelector": {"pool": "gw"}, "priorityClassName": "high",
           "tolerations": [{"key": "k", "operator": "Exists"}],
           "affinity": {"nodeAffinity": {}}, "podLabels": {"team": "ops"},
           "podAnnotations": {"a": "b"}, "resources": {"limits": {"memory": "1Gi"}}}
    objs = render("test", {"commonLabels": {"cost-center": "42"},
                           **{f"gateway.{k}": v for k, v in pod.items()}},
                  namespace=NS, release="wm")
    variables = _env(find(objs, "Deployment")[0])
    labels = json.loads(variables["WINGMAN_OBJECT_LABELS"])
    assert labels == {"app.kubernetes.io/name": "wingman", "app.kubernetes.io/instance": "wm",
                      "app.kubernetes.io/version": "0.1.0", "app.kubernetes.io/part-of": "wingman",
                      "wingman.dev/environment": "test", "cost-center": "42"}
    tuning = json.loads(variables["WINGMAN_GATEWAY_POD"])
    assert tuning == {"nodeSelector": {"pool": "gw"}, "priorityClassName": "high",
                      "tolerations": [{"key": "k", "operator": "Exists"}],
                      "affinity": {"nodeAffinity": {}}, "labels": {"team": "ops"},
                      "annotations": {"a": "b"}, "imagePullPolicy": "IfNotPresent",
                      "resources": {"limits": {"memory": "1Gi"},
                                    "requests": {"cpu": "50m", "memory": "64Mi"}}}


def test_without_previews_the_preview_identity_does_not_exist() -> None:
    objs = render("test", {**RENDER_VALUES, "policy.preview.enabled": False}, namespace=NS)
    assert not [o for o in objs if "preview" in o["metadata"]["name"]]
    assert "pods" not in {r for _, rule in _rules(find(objs, "Role", "wingman-operator"))
                          for r in rule["resources"]}


def test_labels_and_annotations_from_values_reach_their_objects() -> None:
    labels = {"example.com/team": "ops_1.a-b", "empty": ""}
    objs = render("test", {"commonLabels": labels, "operator.podLabels": {"tier": "control"},
                           "operator.podAnnotations": {"example.com/scrape": "a: {b}\nc"},
                           "operator.nodeSelector": {"kubernetes.io/os": "linux"}},
                  namespace=NS)
    for obj in objs:
        assert labels.items() <= obj["metadata"]["labels"].items(), obj["metadata"]["name"]
    template = find(objs, "Deployment", "wingman-operator")[0]["spec"]["template"]
    assert template["metadata"]["labels"]["tier"] == "control"
    assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "wingman"
    assert template["metadata"]["annotations"]["example.com/scrape"] == "a: {b}\nc"
    assert template["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}


def test_a_target_with_an_empty_rule_list_is_refused_not_given_the_default_rules() -> None:
    """`rules: []` reads as "no rights"; rendering the default rules for it would grant what
    the value says not to."""
    result = helm(*template_args("test", {"gateway.targets": [{"namespace": "apps",
                                                                "rules": []}]},
                                 namespace=NS), check=False)
    assert result.returncode != 0
    assert "/gateway/targets/0/rules" in result.stderr, result.stderr


def test_the_runtime_default_apparmor_annotation_reaches_the_pods() -> None:
    """The one AppArmor annotation that keeps the pods' isolation is passed on as given, for
    the container every pod the value reaches has: the operator's, and the gateway's when no
    preview pod gets the gateway's annotations."""
    key = "container.apparmor.security.beta.kubernetes.io/"
    objs = render("test", {"operator.podAnnotations": {key + "operator": "runtime/default"},
                           "gateway.podAnnotations": {key + "gateway": "runtime/default"},
                           "policy.preview.enabled": False}, namespace=NS)
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    assert deployment["spec"]["template"]["metadata"]["annotations"][key + "operator"] == \
        "runtime/default"
    pod = json.loads(_env(deployment)["WINGMAN_GATEWAY_POD"])
    assert pod["annotations"] == {key + "gateway": "runtime/default"}


def test_agents_and_groups_of_other_namespaces_may_be_workers() -> None:
    """What the refusal of the chart's own identities must not refuse: an agent's
    ServiceAccount, one named like the chart's in another namespace, a namespace's group."""
    objs = render("test", {"rbac.workers.serviceAccounts": [
        {"name": "agent"}, {"name": "wingman-gateway", "namespace": "agents"}],
        "rbac.workers.groups": ["system:serviceaccounts:agents"]}, namespace=NS)
    (binding,) = find(objs, "RoleBinding", "wingman-worker")
    assert {(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]} == {
        ("ServiceAccount", "agent", NS), ("ServiceAccount", "wingman-gateway", "agents"),
        ("Group", "system:serviceaccounts:agents", None)}


@pytest.mark.parametrize("namespace", ["Wingman-Test", "wingman_test", "n" * 64, "wingman-"])
def test_a_release_namespace_kubernetes_refuses_fails_with_instructions(namespace: str) -> None:
    """Cluster-scoped names carry the release namespace: an invalid one would render invalid
    names for every ClusterRole and admission policy."""
    result = helm(*template_args("test", namespace=namespace), check=False)
    assert result.returncode != 0
    assert f'the release namespace "{namespace}" is not a Kubernetes namespace name' in (
        result.stderr), result.stderr


def _writes_variables(values: dict[str, Any]) -> dict[str, str]:
    objs = render("test", {**RENDER_VALUES, **values}, namespace=NS)
    (writes,) = [p for p in find(objs, "ValidatingAdmissionPolicy")
                 if p["metadata"]["name"] == f"wingman-{NS}-gateway-writes"]
    return {v["name"]: v["expression"] for v in writes["spec"]["variables"]}


def test_executor_tokens_are_admitted_only_for_the_configured_api_audiences() -> None:
    """The API server fills in its own audiences before admission; the gateway-writes policy
    compares them with admission.executorTokenAudiences, a CEL list literal of exactly those."""
    default = _writes_variables({})["apiAudiences"]
    assert json.loads(default) == ["https://kubernetes.default.svc.cluster.local",
                                   "https://kubernetes.default.svc"]
    gke = "https://container.googleapis.com/v1/projects/p/locations/l/clusters/c"
    own = _writes_variables({"admission.executorTokenAudiences": [gke]})["apiAudiences"]
    assert json.loads(own) == [gke]
    # none at all (every executor token refused), or one that would break out of the literal
    for bad in ([], ["a'b"], ['a"b'], ["a b"], [""]):
        result = helm(*template_args("test", {**RENDER_VALUES,
                                              "admission.executorTokenAudiences": bad},
                                     namespace=NS), check=False)
        assert result.returncode != 0, bad
        assert "executorTokenAudiences" in result.stderr, result.stderr


def test_anonymous_requests_may_never_create_gateway_pods() -> None:
    result = helm(*template_args("test", {"admission.gatewayPodCreators": ["system:anonymous"]},
                                 namespace=NS), check=False)
    assert result.returncode != 0
    assert "admission.gatewayPodCreators lists system:anonymous" in result.stderr


@pytest.mark.parametrize(("key", "where"), [
    ("image.pullPolicy", "at '/image': missing property 'pullPolicy'"),
    ("logging.level", "at '/logging': missing property 'level'"),
    ("operator.healthPort", "at '/operator': missing property 'healthPort'"),
    ("operator.signingKeySecret", "at '/operator': missing property 'signingKeySecret'"),
    ("audit.checkpoints.keySecret", "at '/audit/checkpoints': missing property 'keySecret'"),
    ("chat", "missing property 'chat'"),
    ("networkPolicy.apiServer", "at '/networkPolicy': missing property 'apiServer'"),
])
def test_a_value_set_to_null_is_refused_not_rendered_as_null(key: str, where: str) -> None:
    """null deletes a default in Helm: the templates would render `imagePullPolicy: null`,
    env values of null or fail on a nil block. Every value the chart sets must stay set."""
    result = helm(*template_args("test", {key: None}, namespace=NS), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr


def test_resources_may_be_set_to_null_for_none() -> None:
    objs = render("test", {"operator.resources": None}, namespace=NS)
    container = find(objs, "Deployment", "wingman-operator")[0]["spec"]["template"]["spec"][
        "containers"][0]
    assert not container.get("resources")


@pytest.mark.parametrize(("request_", "limit"), [
    ("300m", "0.3"), ("0.3", "300m"), ("1.5", "1500m"), ("1Ki", "1024"), ("1k", "1000"),
    ("200e6", "256Mi"), (1, "1"), ("256Mi", 268435456),
])
def test_a_request_equal_to_or_below_its_limit_renders(request_: str | int,
                                                       limit: str | int) -> None:
    render("test", {"operator.resources": {"requests": {"cpu": request_},
                                           "limits": {"cpu": limit}}}, namespace=NS)


def test_a_large_uid_from_a_values_file_renders_as_an_integer(tmp_path: Path) -> None:
    """Helm reads numbers in values files as floats and prints those of a million and more
    in exponent form (1.00065e+09), which the API server refuses for an int64 such as
    runAsUser; OpenShift's UIDs are that large."""
    values = tmp_path / "values.yaml"
    values.write_text("operator:\n  runAsUser: 1000650000\n"
                      "chat:\n  enabled: true\n  webhook: {enabled: true, url: https://h.example/w}\n")
    out = helm(*template_args("test", namespace=NS), "-f", str(values)).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    pods = [o["spec"]["template"]["spec"] for o in find(objs, "Deployment")]
    pods += [o["spec"] for o in find(objs, "Pod")]
    assert len(pods) == 3
    for pod in pods:
        context = pod["securityContext"]
        assert context["runAsUser"] == context["runAsGroup"] == 1000650000, context
        assert type(context["runAsUser"]) is int
        assert context.get("fsGroup", 1000650000) == 1000650000


def test_an_ipv6_only_cluster_s_operator_and_chat_listen_on_every_ipv6_address() -> None:
    chat = {"chat.enabled": True,
            "chat.webhook": {"enabled": True, "url": "https://h.example/w"}}
    default = "0.0.0.0"  # noqa: S104 - every IPv4 address of the pod
    ipv6 = {"operator.listenAddress": "::", "chat.listenAddress": "::"}
    for values, want in (({}, default), (ipv6, "::")):
        objs = render("test", {**chat, **values}, namespace=NS)
        for name in ("wingman-operator", "wingman-chat"):
            variables = _env(find(objs, "Deployment", name)[0])
            assert variables["WINGMAN_LISTEN_ADDRESS"] == want, (name, values)
