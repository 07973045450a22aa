"""The identity a command runs as, against the real API server: ``wingman-executor``.

The gateway (``wingman-gateway``) reads the grant, burns the token and writes the grant's
status in the release namespace; the kubectl child runs with a short-lived token of the
executor account, which holds the target namespace's rules and nothing in the release
namespace. So an approved command whose allowlist pattern reaches the release namespace still
cannot read or forge a grant there, while the gateway records the command's result as before.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.gateway import EXECUTOR, Env, gateway_env, make_grant, mint, settings_for
from wingman.dev.cluster import LocalCluster
from wingman.gateway import identity
from wingman.gateway.run import EXIT_OK, EXIT_REFUSED, EXIT_REPLAY, run_gateway
from wingman.kube import Kube

pytestmark = pytest.mark.integration


@pytest.fixture
def env(cluster: LocalCluster, crds: object, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    with gateway_env(cluster, namespace, tmp_path, monkeypatch) as made:
        yield made


def _allow(env: Env, *patterns: str) -> None:
    """An allowlist that also reaches the release namespace (what a careless policy holds)."""
    env.policy_file.write_text(yaml.safe_dump({"environment": "test", "allowlist": [
        f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} -n {env.target}",
        *patterns]}))


def _as_token(env: Env, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl authenticated by ``token`` alone."""
    kubeconfig = env.cluster.token_kubeconfig(token, name="token")
    try:
        return subprocess.run([str(env.cluster.tool("kubectl")), "--kubeconfig",
                               str(kubeconfig), *args], capture_output=True, text=True,
                              timeout=60, env=env.cluster.env(kubeconfig), check=False)
    finally:
        kubeconfig.unlink(missing_ok=True)


def _as_gateway(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with the gateway's own ServiceAccount token (the one its pod mounts)."""
    return _as_token(env, (env.sa_dir / "token").read_text(), *args)


def test_the_command_acts_in_the_target_namespace_as_the_executor_not_the_gateway(
    env: Env,
) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=3 -n {env.target}")
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
    assert env.replicas() == 3
    assert env.grant(g.name)["status"]["phase"] == "Succeeded"
    # the gateway's own identity holds nothing there: only the executor's token could do it
    denied = _as_gateway(env, "scale", "deployment/web", "--replicas=4", "-n", env.target)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    assert env.replicas() == 3


@pytest.mark.parametrize("verb", ["patch-status", "get"])
def test_a_command_reaching_the_release_namespace_cannot_touch_a_grant_there(
    env: Env, verb: str,
) -> None:
    victim = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    forged = "'{\"status\":{\"phase\":\"Succeeded\",\"message\":\"forged\"}}'"
    command = {
        "patch-status": f"kubectl patch executiongrants {victim.name} -n {env.ns} "
                        f"--subresource=status --type=merge -p {forged}",
        "get": f"kubectl get executiongrants {victim.name} -n {env.ns} -o yaml",
    }[verb]
    _allow(env, command)
    g = make_grant(env, command)

    # the command ran (exit 0 for the gateway) and the API server refused the child
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_OK
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "CommandFailed"
    assert status["exitCode"] != 0
    assert "forbidden" in status["output"].lower(), status["output"]
    assert f"system:serviceaccount:{env.ns}:{EXECUTOR}" in status["output"]
    assert "forged" not in json.dumps(env.grant(victim.name))
    assert env.grant(victim.name)["status"]["phase"] == "TokenIssued"
    if verb == "get":
        assert victim.grant["spec"]["command"] not in status["output"]

    # ... while the gateway's own identity still writes grants' status (it just recorded
    # this one's result) and reads them
    patched = _as_gateway(env, "patch", "executiongrants", g.name, "-n", env.ns,
                          "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": {"message": "the gateway's own"}}))
    assert patched.returncode == 0, patched.stderr
    read = _as_gateway(env, "get", "executiongrants", victim.name, "-n", env.ns, "-o", "name")
    assert read.returncode == 0 and victim.name in read.stdout, read.stderr


def test_without_an_executor_token_nothing_runs_and_the_token_stays_unspent(
    env: Env, capsys: pytest.CaptureFixture[str],
) -> None:
    env.cluster.kubectl("delete", "serviceaccount", EXECUTOR, "-n", env.ns)
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ExecutorTokenUnavailable"
    assert f"{env.ns}/{EXECUTOR}" in status["message"]
    assert "the token was not spent" in status["message"]
    assert env.leases() == [], "refused before the burn"
    assert env.replicas() == 1
    assert token not in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--from-file", "--from_file", "-o go-template-file"])
def test_a_command_naming_a_file_of_the_gateway_pod_is_refused_before_anything_runs(
    env: Env, flag: str,
) -> None:
    # kubectl starts in an empty directory, so a relative name (--from-file=token) finds
    # nothing; an absolute one reaches the pod's files, the gateway's own mounted token here.
    # The command rules refuse every such flag (LocalFile) before the token is spent.
    gateway_token = env.sa_dir / "token"
    assert gateway_token.is_absolute() and gateway_token.read_text()
    if flag.startswith("-o"):
        command = f"kubectl get deployment web {flag}={gateway_token} -n {env.target}"
    else:
        command = (f"kubectl create configmap leak {flag}={gateway_token} --dry-run=client "
                   f"-o json -n {env.target}")
    g = make_grant(env, command)
    token = mint(env, g)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ScopeViolation", status
    assert "gateway pod" in status["message"] and "output" not in status, status
    assert gateway_token.read_text().strip() not in json.dumps(status)
    assert env.leases() == [], "refused before the burn"
    [record] = env.audit_records()
    assert record["data"]["reason"] == "ScopeViolation"
    assert record["data"]["detail"] == "LocalFile"


def test_a_raw_path_that_leaves_its_wildcards_segment_is_refused_before_anything_runs(
    env: Env,
) -> None:
    # kubectl would decode and clean the path: GET /api/v1/namespaces/<target>/secrets, which
    # the pattern's wildcard (one segment, never '/') was not meant to reach
    _allow(env, f"kubectl get --raw /api/v1/namespaces/{env.target}/pods/*")
    command = (f"kubectl get --raw /api/v1/namespaces/{env.target}/pods/"
               "..%2F..%2Fsecrets")
    g = make_grant(env, command)
    token = mint(env, g)
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ScopeViolation", status
    assert "--raw" in status["message"] and "output" not in status, status
    assert env.leases() == [], "refused before the burn"
    [record] = env.audit_records()
    assert record["data"]["detail"] == "RawPath"


def test_the_executor_token_dies_with_the_grants_token_secret(env: Env) -> None:
    """The executor's token is bound to the grant's token Secret: once the operator deletes it
    (the grant ended), the token no longer authenticates, whatever its expiration says."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    secret = env.grant(g.name)["status"]["tokenSecretName"]
    settings = settings_for(env, g, None)
    gateway = Kube.from_token(settings.api_server, (env.sa_dir / "token").read_text().strip(),
                              env.sa_dir / "ca.crt")
    executor = identity.request_token(gateway, settings, secret).token
    can = _as_token(env, executor, "auth", "can-i", "patch", "deployments", "-n", env.target)
    assert can.stdout.strip() == "yes", (can.stdout, can.stderr)

    env.cluster.kubectl("delete", "secret", secret, "-n", env.ns)
    # the API server caches a token's successful authentication for 10 s
    deadline = time.monotonic() + 30
    while True:
        gone = _as_token(env, executor, "auth", "can-i", "patch", "deployments", "-n",
                         env.target)
        if gone.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert gone.returncode != 0 and "unauthorized" in gone.stderr.lower(), \
        (gone.stdout, gone.stderr)


def test_a_grant_whose_token_secret_is_gone_runs_nothing(env: Env) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    env.cluster.kubectl("delete", "secret", env.grant(g.name)["status"]["tokenSecretName"],
                        "-n", env.ns)
    assert run_gateway(settings_for(env, g, mint(env, g))) == EXIT_REFUSED
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ExecutorTokenUnavailable"
    assert env.leases() == [], "refused before the burn"
    assert env.replicas() == 1


def test_a_second_pod_with_a_spent_token_is_a_replay_once_the_grant_ended(env: Env) -> None:
    """The executor's token is bound to the grant's token Secret, which the operator deletes
    when the first run ends the grant: a second pod with the same token gets no executor token,
    and is told it is a replay (the token was spent), not that the grant cannot run."""
    g = make_grant(env, f"kubectl scale deployment/web --replicas=2 -n {env.target}")
    token = mint(env, g)
    assert run_gateway(settings_for(env, g, token)) == EXIT_OK
    env.cluster.kubectl("delete", "secret", env.grant(g.name)["status"]["tokenSecretName"],
                        "-n", env.ns)  # what the operator does when the grant ends
    assert run_gateway(settings_for(env, g, token)) == EXIT_REPLAY
    status = env.grant(g.name)["status"]
    assert status["phase"] == "Succeeded", status
    conds = {c["type"]: c["status"] for c in status["conditions"]}
    assert conds.get("ReplayDetected") == "True", status
    assert env.replicas() == 2
