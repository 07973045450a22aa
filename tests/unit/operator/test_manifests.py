"""What the operator creates for a grant: deterministic names, the release's labels, gateway pod
scheduling and resources from values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from wingman.errors import ConfigError
from wingman.model import names
from wingman.operator import manifests
from wingman.settings import OperatorSettings


@pytest.mark.parametrize("grant", ["g", "a" * 54, "a" * 55, "b" * 63, "x-" * 31 + "y"])
def test_job_names_are_deterministic_distinct_and_leave_room_for_the_pod_suffix(
        grant: str) -> None:
    job = names.job_name(grant)
    assert job == names.job_name(grant) and job.endswith("-gw")
    # the Job controller names pods <job>-<5 characters> only while <job>- fits in 58
    assert len(job) <= 57
    assert job == f"{grant}-gw" or len(grant) > 54
    assert names.derived_job(grant) == (job == f"{grant}-gw")


def test_long_grant_names_that_share_a_prefix_get_different_jobs() -> None:
    assert names.job_name("a" * 60 + "x") != names.job_name("a" * 60 + "y")


@pytest.mark.parametrize("grant", ["a" * 55, "b" * 63, "x-" * 31 + "y", "c" * 44 + "-" * 11,
                                   "d" * 44 + "." + "e" * 10, "job-012345678"])
def test_no_grant_whose_job_is_derived_from_its_name_names_another_grants_job(
        grant: str) -> None:
    """Admission relates a grant whose status records no Job to ``<grant>-gw``. A hashed Job
    name's base ends in ``-`` and nine hex digits, and no name so ending is derived: so no
    grant can be named after another grant's hashed Job and be taken for its owner, however
    short (the cut drops trailing ``-`` and ``.``)."""
    job = names.job_name(grant)
    assert job != f"{grant}-gw"
    base = job[:-len("-gw")]
    assert re.search(r"-[0-9a-f]{9}\Z", base), base
    assert not names.derived_job(base)
    assert names.job_name(base) != job  # the base's own Job is hashed again, elsewhere


def test_the_cli_s_grant_names_are_derived() -> None:
    """``kubectl wingman`` and the MCP server name a grant ``<request[:50]>-<8 hex>``: up to 54
    characters they are issued on the claim."""
    from wingman.client.status import grant_name

    for request in ("req-0123abcd", "r" * 45, "deploy-web-2026"):
        name = grant_name(request, "kubectl rollout restart deployment/web -n apps")
        assert names.derived_job(name) and names.job_name(name) == f"{name}-gw", name


def test_a_grant_keeps_the_job_name_it_was_issued_with() -> None:
    grant = {"metadata": {"name": "b" * 59}}
    assert names.grant_job_name(grant) == names.job_name("b" * 59)
    issued = {**grant, "status": {"jobName": "b" * 59 + "-gw"}}
    assert names.grant_job_name(issued) == "b" * 59 + "-gw"


DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


DOTTED = ["a" * 30 + "." + "b" * 32, "a" * 29 + ".b-" + "c" * 31, "c" * 44 + "." + "d" * 18,
          "e" * 47 + "." + "f" * 15, "g." * 31 + "h"]


@pytest.mark.parametrize("grant", DOTTED)
def test_shortened_names_of_dotted_grants_are_valid_names(grant: str) -> None:
    """Where a long name is cut, no "-." or ".-" is left behind (a name the API server refuses,
    and only at the Secret's create, after the command is used up)."""
    subdomain = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
    for name in (names.job_name(grant), names.legacy_secret_name(grant),
                 names.preview_job_name(grant), names.rollback_grant_name(grant)):
        assert subdomain.fullmatch(name) and len(name) <= 63, name
    # a Secret's name may be as long as a subdomain (253): the Job's (57 at most) is kept whole
    secret = names.token_secret_name(names.job_name(grant), "0123456789abcdef")
    assert subdomain.fullmatch(secret) and len(secret) <= 80, secret
    assert secret == f"{names.job_name(grant)}-token-0123456789abcdef"


@pytest.mark.parametrize("grant", ["g", "a" * 40, "b" * 63, "x-" * 31 + "y", *DOTTED])
def test_a_token_secret_name_cannot_be_known_before_its_job_exists(grant: str) -> None:
    """Each gateway Job gets a token Secret name of its own with 64 random bits, so nobody can
    plant a Secret under it in advance; the operator reads it back from the Job. It is exactly
    what the ...-gateway-writes admission policy lets the Job's pod (``<job>-<5 characters>``)
    bind executor tokens to: the Job's name, ``-token-`` and 16 hex digits."""
    meta = {"metadata": {"name": grant, "namespace": "n", "uid": "u"}}
    settings = OperatorSettings.from_env({})
    jobs = [manifests.gateway_job(meta, settings, 300) for _ in range(50)]
    seen = {manifests.job_token_secret(job) for job in jobs}
    assert len(seen) == 50 and None not in seen
    job = names.job_name(grant)
    assert {j["metadata"]["name"] for j in jobs} == {job}
    for name in seen:
        assert name is not None and len(name) <= 80, name
        assert all(DNS_LABEL.fullmatch(label) for label in name.split(".")), name
        assert name != names.legacy_secret_name(grant)
        assert re.fullmatch(re.escape(job) + r"-token-[0-9a-f]{16}", name), name
    # the Job name a grant was issued with (status.jobName) names its Secret too
    issued = manifests.gateway_job(meta, settings, 300, job="issued-gw")
    assert issued["metadata"]["name"] == "issued-gw"
    assert re.fullmatch(r"issued-gw-token-[0-9a-f]{16}", str(manifests.job_token_secret(issued)))
    chosen = manifests.gateway_job(meta, settings, 300, secret_name="g-token-chosen")
    assert manifests.job_token_secret(chosen) == "g-token-chosen"
    # a Job an earlier release made mounts <grant>-token: that is the name read back
    assert manifests.job_token_secret(chosen | {"spec": {"template": {"spec": {"volumes": [
        {"name": "token", "secret": {"secretName": "g-token"}}]}}}}) == "g-token"
    assert manifests.job_token_secret({"spec": {"template": {"spec": {"volumes": []}}}}) is None


# --------------------------------------------------------------------------- labels, tuning

RELEASE_LABELS = {"app.kubernetes.io/name": "wingman", "app.kubernetes.io/instance": "wm",
                  "app.kubernetes.io/version": "0.1.0", "app.kubernetes.io/part-of": "wingman",
                  "team": "platform"}
GRANT: dict[str, Any] = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
         "metadata": {"name": "g", "namespace": "wingman-prd", "uid": "u"}}


def _settings(tmp_path: Path, **env: str) -> OperatorSettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: prd\n")
    return OperatorSettings.from_env({"WINGMAN_ENVIRONMENT": "prd",
                                      "WINGMAN_POLICY_FILE": str(policy), **env})


def test_what_the_operator_creates_carries_the_release_labels(tmp_path: Path) -> None:
    settings = _settings(tmp_path, WINGMAN_OBJECT_LABELS=json.dumps(RELEASE_LABELS))
    job = manifests.gateway_job(GRANT, settings, 300)
    secret = manifests.token_secret(GRANT, "g-token-x", "t" * 40, 0, "job-uid", settings)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    for obj_labels, component in ((job["metadata"]["labels"], "gateway"), (pod_labels, "gateway"),
                                  (secret["metadata"]["labels"], "capability-token")):
        assert obj_labels.items() >= RELEASE_LABELS.items()
        assert obj_labels["wingman.dev/environment"] == "prd"
        assert obj_labels["app.kubernetes.io/managed-by"] == "wingman-operator"
        assert obj_labels["app.kubernetes.io/component"] == component
        assert obj_labels["wingman.dev/grant"] == "g"


def test_a_token_secret_records_its_job_and_its_grant(tmp_path: Path) -> None:
    """Its grant's UID too, in an annotation: the owner reference that names the grant goes
    with a deletion of the grant with propagation Orphan, and the Job that records it may go as
    well; the orphan sweep's record then still names the grant by its UID."""
    secret = manifests.token_secret(GRANT, "g-token-x", "t" * 40, 1_800_000_000, "job-uid",
                                    _settings(tmp_path))
    assert secret["metadata"]["annotations"] == {
        names.EXPIRES_ANNOTATION: "1800000000", names.JOB_UID_ANNOTATION: "job-uid",
        names.GRANT_UID_ANNOTATION: GRANT["metadata"]["uid"]}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == GRANT["metadata"]["uid"]


def test_gateway_pods_take_scheduling_and_resources_from_values(tmp_path: Path) -> None:
    pod: dict[str, Any] = {
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"pool": "gateways"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gw",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}}, "priorityClassName": "wingman-critical",
        "labels": {"cost-center": "ops", "app.kubernetes.io/component": "nope"},
        "annotations": {"example.com/scrape": "false"}}
    settings = _settings(tmp_path, WINGMAN_GATEWAY_POD=json.dumps(pod))
    template = manifests.gateway_job(GRANT, settings, 300)["spec"]["template"]
    spec = template["spec"]
    assert spec["nodeSelector"] == pod["nodeSelector"]
    assert spec["tolerations"] == pod["tolerations"]
    assert spec["affinity"] == pod["affinity"]
    assert spec["priorityClassName"] == "wingman-critical"
    assert spec["containers"][0]["resources"] == pod["resources"]
    assert template["metadata"]["annotations"] == pod["annotations"]
    labels = template["metadata"]["labels"]
    assert labels["cost-center"] == "ops"
    assert labels["app.kubernetes.io/component"] == "gateway", "the operator's labels win"
    plain = manifests.gateway_job(GRANT, _settings(tmp_path), 300)["spec"]["template"]
    assert "nodeSelector" not in plain["spec"] and "annotations" not in plain["metadata"]
    assert plain["spec"]["containers"][0]["resources"]["limits"] == {"memory": "256Mi"}


@pytest.mark.parametrize(("pod", "complaint"), [
    ({"nodeSelectr": {}}, "unknown fields ['nodeSelectr']"),
    ({"labels": {"wingman.dev/role": "gateway"}}, "set by the operator itself"),
    ({"labels": {"bad key!": "x"}}, "not a valid Kubernetes label"),
    ({"tolerations": {"key": "x"}}, "tolerations must be a list"),
    ({"priorityClassName": "Not_A_Name"}, "not a valid name"),
])
def test_bad_gateway_pod_settings_are_refused(tmp_path: Path, pod: dict[str, Any],
                                              complaint: str) -> None:
    with pytest.raises(ConfigError, match="WINGMAN_GATEWAY_POD") as info:
        _settings(tmp_path, WINGMAN_GATEWAY_POD=json.dumps(pod))
    assert complaint in str(info.value)
    with pytest.raises(ConfigError, match="not valid JSON"):
        _settings(tmp_path, WINGMAN_GATEWAY_POD="{")


def test_the_gateway_is_told_which_grant_its_job_was_made_for(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    job = manifests.gateway_job(GRANT, settings, 300)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WINGMAN_GRANT_NAME"] == GRANT["metadata"]["name"]
    assert env["WINGMAN_GRANT_UID"] == GRANT["metadata"]["uid"]


def _service_account_mounts(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the volume, the container's mount) of a pod spec's ServiceAccount credentials."""
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"]
                if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    return volume, mount


@pytest.mark.parametrize("kind", ["gateway", "preview"])
def test_gateway_and_preview_pods_hold_a_token_of_their_own_that_lives_ten_minutes(
        tmp_path: Path, kind: str) -> None:
    """Not the automounted token (3607 s, which the API server extends to a year, valid as long
    as the finished pod exists): a projected one of 600 s, the shortest the API grants, that
    the kubelet renews while the pod runs, where the in-cluster clients look for it, with the
    cluster's CA and the namespace beside it."""
    settings = _settings(tmp_path)
    approval = {"metadata": {"name": "r", "namespace": "wingman-prd", "uid": "u"}}
    job = (manifests.gateway_job(GRANT, settings, 300) if kind == "gateway"
           else manifests.preview_job(approval, settings))
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    volume, mount = _service_account_mounts(spec)
    assert mount["readOnly"] is True
    sources = volume["projected"]["sources"]
    (token,) = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert token == {"path": "token", "expirationSeconds": 600}, "no audience: the API server's"
    assert manifests.SERVICE_ACCOUNT_TOKEN_SECONDS == 600
    assert {"configMap": {"name": "kube-root-ca.crt",
                          "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in sources
    assert {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
        "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}} in sources
