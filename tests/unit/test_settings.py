"""Settings come from one place: the chart's env and the operator's Job manifests agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.chart import find, render
from wingman.errors import ConfigError
from wingman.operator import manifests
from wingman.settings import GatewaySettings, OperatorSettings

REPO = Path(__file__).resolve().parents[2]


def _env(container: dict[str, Any], namespace: str, extra: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == \
                "metadata.namespace":
            env[item["name"]] = namespace
        elif item["name"] in extra:
            env[item["name"]] = extra[item["name"]]
    return env


@pytest.mark.parametrize("environment", ["test", "prd"])
def test_the_chart_configures_the_operator_completely(environment: str, tmp_path: Path) -> None:
    objs = render(environment, namespace=f"wingman-{environment}")
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (policy_cm,) = find(objs, "ConfigMap", "wingman-policy")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_cm["data"]["policy.yaml"])
    env = _env(container, f"wingman-{environment}",
               {"WINGMAN_AUDIT_TARGET": "postgresql://db/audit"})
    assert env["WINGMAN_POLICY_FILE"] == "/etc/wingman/policy/policy.yaml"
    env["WINGMAN_POLICY_FILE"] = str(policy)
    settings = OperatorSettings.from_env(env)
    assert settings.environment == environment
    assert settings.namespace == f"wingman-{environment}"
    assert settings.policy.name == environment
    assert settings.peering is True
    if environment == "prd":
        assert settings.audit_secret == "wingman-audit-dsn/dsn"
        assert settings.policy.required_approvals == 2
    else:
        assert settings.audit_volume_claim == "wingman-audit"


def test_the_gateway_job_configures_the_gateway(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": "wingman-test",
                                          "WINGMAN_POLICY_FILE": str(policy),
                                          "WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "g", "namespace": "wingman-test", "uid": "u"}}
    job = manifests.gateway_job(grant, settings, 300)
    assert job["spec"]["suspend"] is True and job["spec"]["backoffLimit"] == 0
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = _env(container, "wingman-test", {"WINGMAN_JOB_UID": "job-uid",
                                           "WINGMAN_POD_NAME": "g-gw-abcde"})
    env.update({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "WINGMAN_POLICY_FILE": str(policy)})
    gw = GatewaySettings.from_env(env)
    assert (gw.grant_name, gw.job_uid, gw.namespace) == ("g", "job-uid", "wingman-test")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(gw.token_file.parent) in mounts and str(gw.public_keys_dir) in mounts
    assert str(Path(settings.audit_target).parent) in mounts


@pytest.mark.parametrize(("env", "message"), [
    ({"WINGMAN_NAMESPACE": "Bad_Name"}, "not a valid Kubernetes name"),
    ({"WINGMAN_METRICS_PORT": "http"}, "must be an integer"),
    ({"WINGMAN_LOG_FORMAT": "xml"}, "'json' or 'text'"),
    ({"WINGMAN_LOG_LEVEL": "loud"}, "must be one of debug, info, warning, error"),
    ({"WINGMAN_OBJECT_LABELS": '{"team": 1}'}, "must map strings to strings"),
    ({"WINGMAN_OBJECT_LABELS": '["team"]'}, "must be a JSON object"),
    ({"WINGMAN_AUDIT_SECRET": "nokey"}, "must be 'name/key'"),
    ({"WINGMAN_PEERING": "maybe"}, "true or false"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OperatorSettings.from_env(env)


def test_gateway_needs_its_api_server_and_grant() -> None:
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        GatewaySettings.from_env({"WINGMAN_GRANT_NAME": "g"})
    with pytest.raises(ConfigError, match="WINGMAN_GRANT_NAME"):
        GatewaySettings.from_env({"KUBERNETES_SERVICE_HOST": "h"})


def _settings_from(objs: list[dict[str, Any]], tmp_path: Path) -> tuple[OperatorSettings, Path]:
    """The operator's settings exactly as the rendered Deployment's env gives them."""
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = _env(container, "wingman-test", {"WINGMAN_AUDIT_TARGET": "/a/audit.jsonl"})
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    env["WINGMAN_POLICY_FILE"] = str(policy)
    return OperatorSettings.from_env(env), policy


def test_docker_enabled_in_the_chart_mounts_exactly_the_socket_into_gateway_jobs(
        tmp_path: Path) -> None:
    objs = render("test", {"gateway.docker.enabled": True,
                           "gateway.docker.socketPath": "/run/docker.sock"})
    settings, policy = _settings_from(objs, tmp_path)
    assert settings.gateway_docker_socket == "/run/docker.sock"
    job = manifests.gateway_job({"metadata": {"name": "g", "namespace": "n", "uid": "u"}},
                                settings, 300)
    pod = job["spec"]["template"]["spec"]
    host_paths = [v["hostPath"] for v in pod["volumes"] if "hostPath" in v]
    assert host_paths == [{"path": "/run/docker.sock", "type": "Socket"}]
    gw_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert gw_env["WINGMAN_DOCKER_ENABLED"] == "true"
    assert gw_env["WINGMAN_DOCKER_HOST"] == "unix:///var/run/docker.sock"
    without = OperatorSettings.from_env({"WINGMAN_POLICY_FILE": str(policy)})
    plain = manifests.gateway_job({"metadata": {"name": "g", "namespace": "n", "uid": "u"}},
                                  without, 300)
    assert not any("hostPath" in v for v in plain["spec"]["template"]["spec"]["volumes"])


def test_gateway_timing_comes_from_the_values(tmp_path: Path) -> None:
    objs = render("test", {"gateway.timeoutSeconds": 45,
                           "gateway.jobTTLSecondsAfterFinished": 600,
                           "operator.clockLeewaySeconds": 2})
    settings, _ = _settings_from(objs, tmp_path)
    assert (settings.gateway_timeout_seconds, settings.job_ttl_seconds,
            settings.leeway_seconds) == (45, 600, 2)
    job = manifests.gateway_job({"metadata": {"name": "g", "namespace": "n", "uid": "u"}},
                                settings, 300)
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    gw_env = {e["name"]: e.get("value") for e in
              job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert gw_env["WINGMAN_EXEC_TIMEOUT_SECONDS"] == "45"
    assert gw_env["WINGMAN_LEEWAY_SECONDS"] == "2"
