"""Settings come from one place: the chart's env and the operator's Job manifests agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.chart import find, render
from wingman.errors import ConfigError
from wingman.operator import manifests
from wingman.settings import (
    ChatConfig,
    ChatSettings,
    GatewayPod,
    GatewaySettings,
    McpHttpSettings,
    OperatorSettings,
)

REPO = Path(__file__).resolve().parents[2]


def _env(container: dict[str, Any], namespace: str, extra: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == \
                "metadata.namespace":
            env[item["name"]] = namespace
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == \
                "metadata.name":
            env[item["name"]] = "wingman-operator-abc12-xyz"
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
    env = _env(container, f"wingman-{environment}", {})
    assert env["WINGMAN_POLICY_FILE"] == "/etc/wingman/policy/policy.yaml"
    env["WINGMAN_POLICY_FILE"] = str(policy)
    if environment == "prd":  # the Secret volume the Deployment mounts, here a file
        assert env["WINGMAN_AUDIT_TARGET_FILE"] == "/etc/wingman/audit-dsn/dsn"
        dsn = tmp_path / "dsn"
        dsn.write_text("postgresql://writer:s3cret@db/audit\n")
        env["WINGMAN_AUDIT_TARGET_FILE"] = str(dsn)
    settings = OperatorSettings.from_env(env)
    assert settings.environment == environment
    assert settings.namespace == f"wingman-{environment}"
    assert settings.policy.name == environment
    assert settings.leader_election is True
    assert settings.identity == "wingman-operator-abc12-xyz"  # the pod name
    assert settings.gateway_targets == frozenset({"apps"})  # the values' gateway.targets
    # ... and the rules the executor's Role has there (apps: the chart's defaults)
    assert [r["resources"] for r in settings.gateway_target_rules["apps"]] == [
        ["deployments"], ["deployments/scale"], ["replicasets"]]
    if environment == "prd":
        assert settings.audit_secret == "wingman-audit-dsn/dsn"
        assert settings.audit_target == "postgresql://writer:s3cret@db/audit"
        assert "s3cret" not in repr(settings)
        assert settings.policy.required_approvals == 2
    else:
        assert settings.audit_volume_claim == "wingman-audit"


def test_the_gateway_job_configures_the_gateway(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    settings = OperatorSettings.from_env({"WINGMAN_NAMESPACE": "wingman-test",
                                          "WINGMAN_POLICY_FILE": str(policy),
                                          "WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit"})
    assert settings.gateway_targets is None  # not given: the panel judges nothing by them
    grant = {"apiVersion": "wingman.dev/v1alpha1", "kind": "ExecutionGrant",
             "metadata": {"name": "g", "namespace": "wingman-test", "uid": "u"}}
    job = manifests.gateway_job(grant, settings, 300)
    # runnable at once: the pod waits for its token because the Secret volume is required
    assert "suspend" not in job["spec"] and job["spec"]["backoffLimit"] == 0
    (token,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "token"]
    assert token["secret"]["secretName"].startswith("g-gw-token-")  # after the Job: g-gw
    assert not token["secret"].get("optional")
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
    # a name no ApprovalRequest can carry (the CRDs' pattern): the operator would serve nothing
    ({"WINGMAN_ENVIRONMENT": "a" * 32}, "WINGMAN_ENVIRONMENT='a{32}' is not an environment name"),
    ({"WINGMAN_ENVIRONMENT": "9prd"}, "a lowercase letter, then lowercase letters, digits and"),
    ({"WINGMAN_ENVIRONMENT": "prd.eu"}, "1 to 31 characters"),
    ({"WINGMAN_METRICS_PORT": "http"}, "must be an integer"),
    # port 0 would bind the liveness endpoint on port 80, not a free port
    ({"WINGMAN_HEALTH_PORT": "0"}, "WINGMAN_HEALTH_PORT=0 must be between 1 and 65535"),
    # an address to listen on, not a host name to resolve
    ({"WINGMAN_LISTEN_ADDRESS": "localhost"}, "WINGMAN_LISTEN_ADDRESS='localhost' must be an "
     "IP address"),
    ({"WINGMAN_LISTEN_ADDRESS": "127.0.0.1:8080"}, "must be an IP address"),
    ({"WINGMAN_LISTEN_ADDRESS": "[::1]"}, "must be an IP address"),
    # IPv6 addresses its sockets could not listen on: an IPv6-only socket (kopf's) cannot
    # take a mapped IPv4 address, nor a link-local one without its interface
    ({"WINGMAN_LISTEN_ADDRESS": "::ffff:127.0.0.1"}, "is an IPv4-mapped or link-local IPv6"),
    ({"WINGMAN_LISTEN_ADDRESS": "::ffff:0.0.0.0"}, "is an IPv4-mapped or link-local IPv6"),
    ({"WINGMAN_LISTEN_ADDRESS": "fe80::1"}, "is an IPv4-mapped or link-local IPv6"),
    ({"WINGMAN_LISTEN_ADDRESS": "fe80::1%eth0"}, "is an IPv4-mapped or link-local IPv6"),
    ({"WINGMAN_LOG_FORMAT": "xml"}, "'json' or 'text'"),
    ({"WINGMAN_LOG_LEVEL": "loud"}, "must be one of debug, info, warning, error"),
    ({"WINGMAN_OBJECT_LABELS": '{"team": 1}'}, "must map strings to strings"),
    ({"WINGMAN_OBJECT_LABELS": '["team"]'}, "must be a JSON object"),
    ({"WINGMAN_AUDIT_SECRET": "nokey"}, "must be 'name/key'"),
    ({"WINGMAN_GATEWAY_TARGETS": '["apps", "Kube_System"]'},
     "WINGMAN_GATEWAY_TARGETS: 'Kube_System' is not a namespace name"),
    ({"WINGMAN_GATEWAY_TARGETS": '{"apps": {}}'}, "must be a JSON array"),
    ({"WINGMAN_GATEWAY_TARGET_RULES": '["apps"]'}, "must be a JSON object"),
    ({"WINGMAN_GATEWAY_TARGET_RULES": '{"Apps": []}'},
     "WINGMAN_GATEWAY_TARGET_RULES: 'Apps' is not a namespace name"),
    ({"WINGMAN_GATEWAY_TARGET_RULES": '{"apps": {"verbs": ["get"]}}'},
     "namespace 'apps' must map to a JSON array of RBAC rules"),
    ({"WINGMAN_GATEWAY_TARGET_RULES": '{"apps": ["get"]}'}, "must map to a JSON array"),
    # a name list that is no list would read as no restriction: every name
    ({"WINGMAN_GATEWAY_TARGET_RULES": '{"apps": [{"apiGroups": [""], "resources": '
      '["namespaces"], "verbs": ["get"], "resourceNames": "other"}]}'},
     "rule 0 of namespace 'apps': resourceNames must be a list of strings, got \"other\""),
    ({"WINGMAN_GATEWAY_TARGET_RULES": '{"apps": [{"apiGroups": [""], "resources": '
      '["pods"], "verbs": ["get", 1]}]}'}, "rule 0 of namespace 'apps': verbs must be a list"),
    ({"WINGMAN_LEADER_ELECTION": "maybe"}, "true or false"),
    ({"WINGMAN_API_CONCURRENCY": "0"}, "WINGMAN_API_CONCURRENCY=0 must be between 1 and 256"),
    ({"WINGMAN_RENEW_DEADLINE_SECONDS": "12"}, "must give up before anyone else"),
    # a finished preview Job must outlive the operator's look at its pod (PreviewJobMissing)
    ({"WINGMAN_JOB_TTL_SECONDS": "0"}, "WINGMAN_JOB_TTL_SECONDS=0 must be between 300 and"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OperatorSettings.from_env(env)


@pytest.mark.parametrize("end", ["\n", "\r\n"])
@pytest.mark.parametrize(("key", "value", "message"), [
    ("WINGMAN_OBJECT_LABELS", {"team": "infra{end}"}, "is not a valid Kubernetes label"),
    ("WINGMAN_OBJECT_LABELS", {"team{end}": "infra"}, "is not a valid Kubernetes label"),
    ("WINGMAN_GATEWAY_POD", {"labels": {"team": "infra{end}"}},
     "is not a valid Kubernetes label"),
    ("WINGMAN_GATEWAY_POD", {"priorityClassName": "high{end}"}, "is not a valid name"),
])
def test_a_name_or_label_ending_in_a_line_break_is_refused(key: str, value: dict[str, Any],
                                                           message: str, end: str) -> None:
    """'$' also matches before a final newline: such a value must not pass the operator's
    own check to be refused by the API server only later (or reach a header or a file)."""
    raw = json.dumps(value).replace("{end}", json.dumps(end)[1:-1])
    with pytest.raises(ConfigError, match=message):
        if key == "WINGMAN_GATEWAY_POD":
            GatewayPod.from_env({key: raw})
        else:
            OperatorSettings.from_env({key: raw})


@pytest.mark.parametrize("key", ["WINGMAN_DOCKER_HOST", "DOCKER_HOST"])
@pytest.mark.parametrize("url", ["tcp://alice:s3cr3t@docker:2376", "ssh://alice:s3/cr3t@docker",
                                 "https://docker:2376/?alice=s3cr3t"])
def test_a_refused_docker_host_does_not_show_its_credentials(key: str, url: str) -> None:
    with pytest.raises(ConfigError, match="must be a local socket") as info:
        GatewaySettings.from_env({"KUBERNETES_SERVICE_HOST": "h", "WINGMAN_GRANT_NAME": "g",
                                  key: url})
    assert f"{key}=" in info.value.message
    for part in ("s3", "cr3t", "alice"):
        assert part not in info.value.message


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


def test_operator_throughput_settings_come_from_the_values(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "v").mkdir()
    defaults, _ = _settings_from(render("test", {}), tmp_path / "d")
    assert (defaults.api_concurrency, defaults.sweep_interval_seconds,
            defaults.resync_seconds) == (32, 10.0, 30.0)
    objs = render("test", {"operator.apiConcurrency": 8, "operator.sweepIntervalSeconds": 5,
                           "operator.resyncSeconds": 60})
    settings, _ = _settings_from(objs, tmp_path / "v")
    assert (settings.api_concurrency, settings.sweep_interval_seconds,
            settings.resync_seconds) == (8, 5.0, 60.0)


def test_a_postgres_gateway_job_reads_the_dsn_from_a_secret_volume(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://writer:s3cret@db:5432/audit")
    settings = OperatorSettings.from_env({"WINGMAN_POLICY_FILE": str(policy),
                                          "WINGMAN_AUDIT_TARGET_FILE": str(dsn),
                                          "WINGMAN_AUDIT_SECRET": "wingman-audit-dsn/dsn"})
    job = manifests.gateway_job({"metadata": {"name": "g", "namespace": "n", "uid": "u"}},
                                settings, 300)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "s3cret" not in str(job)
    assert not any("secretKeyRef" in str(e) for e in container["env"])
    assert not any(e["name"] == "WINGMAN_AUDIT_TARGET" for e in container["env"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WINGMAN_AUDIT_TARGET_FILE"] == "/etc/wingman/audit-dsn/dsn"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "audit-dsn"]
    assert volume["secret"] == {"secretName": "wingman-audit-dsn", "defaultMode": 0o400,
                                "items": [{"key": "dsn", "path": "dsn"}]}
    assert {"name": "audit-dsn", "mountPath": "/etc/wingman/audit-dsn",
            "readOnly": True} in container["volumeMounts"]
    # The gateway's settings from that env, with the Secret file where the pod mounts it.
    env.update({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "WINGMAN_POLICY_FILE": str(policy),
                "WINGMAN_AUDIT_TARGET_FILE": str(dsn), "WINGMAN_JOB_UID": "j"})
    gateway = GatewaySettings.from_env({k: v for k, v in env.items() if v is not None})
    assert gateway.audit_target == "postgresql://writer:s3cret@db:5432/audit"
    assert "s3cret" not in repr(gateway)


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot be read"),
    ("", "is empty"),
    ("  \n", "is empty"),
    ("x" * 70000, "larger than"),
])
def test_a_bad_dsn_file_is_a_clear_error(tmp_path: Path, content: str | None,
                                         message: str) -> None:
    path = tmp_path / "dsn"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        OperatorSettings.from_env({"WINGMAN_AUDIT_TARGET_FILE": str(path)})
    assert "WINGMAN_AUDIT_TARGET_FILE" in err.value.message


def test_the_dsn_file_and_a_target_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dsn"
    path.write_text("postgresql://db/audit")
    with pytest.raises(ConfigError, match="both set"):
        OperatorSettings.from_env({"WINGMAN_AUDIT_TARGET_FILE": str(path),
                                   "WINGMAN_AUDIT_TARGET": "/a/b.jsonl"})


@pytest.mark.parametrize(("env", "message"), [
    ({"WINGMAN_AUDIT_WITNESS_URL": "https://w.example/c"}, "HMAC_KEY_FILE is not"),
    ({"WINGMAN_AUDIT_WITNESS_URL": "ftp://w.example/c"}, "must be an http"),
    ({"WINGMAN_AUDIT_WITNESS_URL": "https://user:pw@w.example/c"}, "without credentials"),
    ({"WINGMAN_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0"}, "between 1 and 86400"),
    ({"WINGMAN_AUDIT_CHECKPOINTS_KEPT": "5000"}, "between 1 and 2000"),
    ({"WINGMAN_AUDIT_KEY_SECRET": "Bad"}, "not a valid Kubernetes name"),
])
def test_bad_checkpoint_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        OperatorSettings.from_env(env)


@pytest.mark.parametrize("url", [
    "https://alice:s3cr3t@w.example/c", "ftp://alice:s3cr3t@w/c",
    "https://alice:s3cr3t@w.example/c#x", "https:/alice:s3cr3t@w/c",
    # a password with an unencoded '/', '?', '#' or '@': a URL parser reads part of it as the
    # port, the path, the query or the fragment
    "https://alice:s3/cr3t@w.example/c", "https://alice:s3?cr3t@w.example:8443/c",
    "https://alice:s3?cr#3t@w.example:8443/c", "https://alice:s3@cr3t@w.example/c",
    "https://alice:s3cr3t@[::1]:8443/c", "https://alice:@w.example/c",
    # a token in the query of a URL refused for another reason
    "ftp://w.example/c?alice=s3cr3t", "https://w.example/c?alice=s3cr3t#x",
    "https://w.exa mple/c?alice=s3cr3t", "https://w.example:x/c?alice=s3cr3t",
])
def test_a_refused_witness_url_does_not_show_its_credentials(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        OperatorSettings.from_env({"WINGMAN_AUDIT_WITNESS_URL": url})
    assert "WINGMAN_AUDIT_WITNESS_URL=" in info.value.message
    for part in ("s3", "cr3t", "cr#3t", "alice"):
        assert part not in info.value.message


def test_the_witness_key_comes_from_a_file_and_never_shows(tmp_path: Path) -> None:
    key = tmp_path / "hmac"
    key.write_text("k" * 16 + "\n")
    settings = OperatorSettings.from_env({"WINGMAN_AUDIT_WITNESS_URL": "http://127.0.0.1:9/c",
                                          "WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE": str(key)})
    assert settings.witness_hmac_key == "k" * 16
    assert "kkkk" not in repr(settings)
    settings = OperatorSettings.from_env({
        "WINGMAN_AUDIT_WITNESS_URL": "https://w.example/c?token=s3cr3t",
        "WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE": str(key)})
    assert settings.witness_url == "https://w.example/c?token=s3cr3t"
    assert "s3cr3t" not in repr(settings)
    key.write_text("short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        OperatorSettings.from_env({"WINGMAN_AUDIT_WITNESS_HMAC_KEY_FILE": str(key)})


@pytest.mark.parametrize("field, url", [
    ("webhook", "https://user:pa55word@hooks.example/w"),
    ("webhook", "https://user:pa/s?s#word@hooks.example/w"),
    ("webhook", "https://hooks.example/w@x"),
    ("webhook", "https://hooks.example/w x"),
    ("webhook", "https://hooks.example/w\u0007"),
    ("telegram", "https://bot:secret@tg.internal/bot"),
    ("slack", "https://x:y/z@slack.internal/api/"),
])
def test_a_chat_url_with_credentials_or_spaces_is_refused_without_showing_them(
        field: str, url: str) -> None:
    section: dict[str, Any] = {"enabled": True, "url": url, "baseUrl": url}
    if field == "telegram":
        section["chatId"] = -100
    if field == "slack":
        section.update(teamId="T0TEAM", channel="C0CHAN")
    with pytest.raises(ConfigError, match=r"must be an http\(s\) URL without credentials") \
            as caught:
        ChatConfig.from_dict({"environment": "test", field: section}, environment="test")
    for secret in ("pa55word", "secret", "s?s#word", "y/z"):
        assert secret not in caught.value.message


def test_a_chat_url_without_credentials_is_kept() -> None:
    config = ChatConfig.from_dict({"environment": "test", "webhook": {
        "enabled": True, "url": "https://hooks.example/w?team=ops%40example"}},
        environment="test")
    assert config.webhook is not None
    assert config.webhook.url == "https://hooks.example/w?team=ops%40example"


def test_the_mcp_servers_http_bounds_come_from_the_flag_else_the_variable_else_the_default(
        ) -> None:
    assert McpHttpSettings.from_env({}) == McpHttpSettings(
        max_connections=100, idle_timeout_seconds=5, max_sessions=1000)
    env = {"WINGMAN_MCP_MAX_CONNECTIONS": "20", "WINGMAN_MCP_IDLE_TIMEOUT_SECONDS": "30",
           "WINGMAN_MCP_MAX_SESSIONS": "40"}
    assert McpHttpSettings.from_env(env) == McpHttpSettings(20, 30, 40)
    assert McpHttpSettings.from_env(env, max_connections=7, idle_timeout_seconds=9,
                                    max_sessions=11) == McpHttpSettings(7, 9, 11)


@pytest.mark.parametrize(("env", "flags", "says"), [
    ({"WINGMAN_MCP_MAX_CONNECTIONS": "0"}, {}, "WINGMAN_MCP_MAX_CONNECTIONS=0 must be between 1"),
    ({"WINGMAN_MCP_MAX_CONNECTIONS": "many"}, {}, "must be an integer"),
    ({}, {"max_connections": 10001}, "--max-connections 10001 must be between 1 and 10000"),
    ({}, {"idle_timeout_seconds": 0}, "--idle-timeout-seconds 0 must be between 1 and 600"),
    ({"WINGMAN_MCP_IDLE_TIMEOUT_SECONDS": "601"}, {}, "IDLE_TIMEOUT_SECONDS=601 must be"),
    ({}, {"max_sessions": 0}, "--max-sessions 0 must be between 1 and 10000"),
    ({"WINGMAN_MCP_MAX_SESSIONS": "10001"}, {}, "MAX_SESSIONS=10001 must be"),
])
def test_an_mcp_http_bound_out_of_range_names_where_it_came_from(
        env: dict[str, str], flags: dict[str, int], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        McpHttpSettings.from_env(env, **flags)


@pytest.mark.parametrize("secret", [
    "JBSWY3DPEHPK3PXP",  # 80 bits: fewer than the 112 pyotp takes
    "JBSW Y3DP EHPK 3PXP JBSW Y3DP EHPK 3PXP",  # as an authenticator app shows it
    "otpauth://totp/bob?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",  # the enrolment URI
    "0123456789abcdef0123456789abcdef",  # hex, not base32
])
def test_a_totp_secret_step_up_cannot_use_is_refused_at_start_without_showing_it(
        tmp_path: Path, secret: str) -> None:
    """Else the chat component starts, and every code of that person fails unanswered (the
    library refuses the secret), each counted as a wrong one until a lockout."""
    (tmp_path / "chat.yaml").write_text(json.dumps({
        "environment": "prd", "stepUp": {"enabled": True},
        "webhook": {"enabled": True, "url": "https://hooks.example/w"},
        "people": [{"kubernetesUser": "bob", "slackUserId": "U0BOB",
                    "totpSecretKey": "totp-bob"}]}))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "webhook-secret").write_text("webhook-secret-value\n")
    env = {"WINGMAN_ENVIRONMENT": "prd", "WINGMAN_CHAT_CONFIG": str(tmp_path / "chat.yaml"),
           "WINGMAN_CHAT_SECRETS_DIR": str(secrets),
           "WINGMAN_AUDIT_TARGET": str(tmp_path / "audit.log")}
    (secrets / "totp-bob").write_text("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n")  # 160 bits
    assert ChatSettings.from_env(env).secret("totp-bob") == "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    (secrets / "totp-bob").write_text(secret + "\n")
    with pytest.raises(ConfigError, match=r"'totp-bob' \(bob's TOTP secret\).*base32") \
            as caught:
        ChatSettings.from_env(env)
    assert secret not in caught.value.message and "JBSW" not in caught.value.message


@pytest.mark.parametrize(("config", "says"), [
    ({"telegram": "yes"}, "chat.telegram must be a mapping"),
    ({"slack": ["C0CHAN"]}, "chat.slack must be a mapping"),
    ({"stepUp": True}, "chat.stepUp must be a mapping"),
    ({"webhook": "https://hooks.example/w"}, "chat.webhook must be a mapping"),
    ({"people": {"kubernetesUser": "bob", "slackUserId": "U0BOB"}},
     "chat.people must be a list of people"),
    ({"people": [{"kubernetesUser": "bob", "slackUserId": "U0BOB",
                  "groups": "wingman:prd-approvers"}]},
     r"chat.people\[0\].groups must be a list of group names"),
    ({"people": [{"kubernetesUser": "bob", "slackUserId": "U0BOB", "groups": [None]}]},
     r"chat.people\[0\].groups must be a list of group names"),
    ({"people": [{"kubernetesUser": "bob", "slackUserId": "U0BOB", "groups": [" x"]}]},
     r"chat.people\[0\].groups must be a list of group names"),
    ({"people": [{"kubernetesUser": ["bob"], "slackUserId": "U0BOB"}]},
     r"chat.people\[0\].kubernetesUser must be a person's user name"),
])
def test_a_chat_configuration_of_the_wrong_shape_is_refused_naming_the_field(
        config: dict[str, Any], says: str) -> None:
    """A section that is not a mapping failed with a traceback ('str' object has no attribute
    'get'), people written as one mapping were read as its keys, a person's groups written as
    one string became a group per character, and a user or group that is not a name was
    taken as its text ("['bob']", "None"): each is refused at start, naming the field."""
    with pytest.raises(ConfigError, match=says):
        ChatConfig.from_dict({"environment": "test", "webhook": {
            "enabled": True, "url": "https://hooks.example/w"}} | config, environment="test")


@pytest.mark.parametrize(("config", "says"), [
    ({"slack": {"enabled": True, "teamId": "T0TEAM\n", "channel": "C0CHAN"}},
     "chat.slack.teamId must be a Slack id"),
    ({"slack": {"enabled": True, "teamId": "T0TEAM", "channel": "C0CHAN\n"}},
     "chat.slack.channel must be a Slack id"),
    ({"slack": {"enabled": True, "teamId": "T0TEAM", "channel": "C0CHAN",
                "requesterChannel": "C0REQ\n"}}, "chat.slack.requesterChannel must be"),
    ({"people": [{"kubernetesUser": "bob", "slackUserId": "U0BOB\n"}]},
     r"chat.people\[0\].slackUserId must be a Slack user id"),
])
def test_a_slack_id_with_a_line_break_after_it_is_refused(
        config: dict[str, Any], says: str) -> None:
    """A Slack id with a line break after it (a YAML block scalar) was taken, and then
    matched nothing Slack sends: every action refused as from another workspace, cards posted
    to no channel, the person never recognised. Refused at start, naming the field."""
    with pytest.raises(ConfigError, match=says):
        ChatConfig.from_dict({"environment": "test"} | config, environment="test")


@pytest.mark.parametrize(("key", "section"), [
    ("webhook-secret", {"webhook": {"enabled": True, "url": "https://hooks.example/w"}}),
    ("slack-signing-secret", {"slack": {"enabled": True, "teamId": "T0TEAM",
                                        "channel": "C0CHAN"}}),
])
def test_a_signing_key_too_short_to_be_one_is_refused_at_start_without_showing_it(
        tmp_path: Path, key: str, section: dict[str, Any]) -> None:
    """The webhook's deliveries are signed with webhook-secret, and Slack's requests are
    checked with slack-signing-secret: a key of a few characters (a placeholder, a value cut
    short) lets anyone forge deliveries, or is not the secret Slack signs with (every request
    refused BadSignature), and one under 6 characters is not even kept out of the logs. It is
    refused at start, naming the key, never its value."""
    (tmp_path / "chat.yaml").write_text(json.dumps({"environment": "prd", **section}))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("webhook-secret", "slack-signing-secret", "slack-bot-token"):
        (secrets / name).write_text("a-key-long-enough-0123456789\n")
    env = {"WINGMAN_ENVIRONMENT": "prd", "WINGMAN_CHAT_CONFIG": str(tmp_path / "chat.yaml"),
           "WINGMAN_CHAT_SECRETS_DIR": str(secrets),
           "WINGMAN_AUDIT_TARGET": str(tmp_path / "audit.log")}
    assert ChatSettings.from_env(env).secret(key) == "a-key-long-enough-0123456789"
    (secrets / key).write_text("k3y-short\n")
    with pytest.raises(ConfigError, match=f"'{key}' holds 9 characters, fewer than 16") \
            as caught:
        ChatSettings.from_env(env)
    assert "k3y-short" not in caught.value.message


@pytest.mark.parametrize("section", ["telegram", "slack", "webhook", "stepUp"])
@pytest.mark.parametrize("enabled", ["false", "no", 0, 1, None])
def test_a_chat_section_enabled_not_true_or_false_is_refused(section: str, enabled: Any) -> None:
    """``enabled: "false"`` (a quoted value, or ``--set-string``) read as true and switched the
    channel (or step-up) on; anything but true or false is refused at start, naming the field."""
    with pytest.raises(ConfigError, match=rf"chat.{section}.enabled must be true or false"):
        ChatConfig.from_dict({"environment": "test", section: {"enabled": enabled}},
                             environment="test")


EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - what the setting is checked for


@pytest.mark.parametrize(("given", "listens"), [
    (None, EVERY_ADDRESS),  # a pod's probes and scrapes come over the pod's own address
    ("", EVERY_ADDRESS),
    (" 127.0.0.1 ", "127.0.0.1"),
    ("::", "::"),
    ("0:0:0:0:0:0:0:1", "::1"),
])
def test_the_health_and_metrics_ports_listen_on_every_address_unless_told(
        given: str | None, listens: str) -> None:
    env = {} if given is None else {"WINGMAN_LISTEN_ADDRESS": given}
    assert OperatorSettings.from_env(env).listen_address == listens
