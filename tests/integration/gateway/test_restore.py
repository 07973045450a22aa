"""A command that ran, then etcd restored from a backup taken before it ran: the cluster no
longer knows (the grant is ``TokenIssued`` again, its request's claim and the burn marker are
back as they were, so the same token passes every check the cluster can make), the audit trail
does, and the gateway does not run the command a second time (``support.restore``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gateway import Env, gateway_env, make_grant, mint, settings_for
from support.restore import backup, own_control_plane, restore
from wingman.dev.cluster import LocalCluster
from wingman.gateway.run import EXIT_OK, EXIT_REFUSED, EXIT_REPLAY, run_gateway


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with own_control_plane(tmp_path_factory.mktemp("restore-cluster")) as local:
        yield local


@pytest.fixture
def env(own_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[Env]:
    ns = f"gw-rs-{uuid.uuid4().hex[:8]}"
    own_cluster.kubectl("create", "namespace", ns)
    with gateway_env(own_cluster, ns, tmp_path, monkeypatch) as made:
        yield made


def test_a_command_that_ran_before_etcd_was_restored_is_not_run_again(
        env: Env, tmp_path: Path) -> None:
    g = make_grant(env, f"kubectl scale deployment/web --replicas=3 -n {env.target}")
    token = mint(env, g)
    copy = tmp_path / "etcd-backup"
    backup(env.cluster, copy)
    assert run_gateway(settings_for(env, g, token)) == EXIT_OK
    assert env.replicas() == 3 and env.grant(g.name)["status"]["phase"] == "Succeeded"
    assert len(env.leases()) == 1

    restore(env.cluster, copy)
    # the cluster as it was before the run: nothing in it says the token was spent
    assert env.replicas() == 1
    assert env.grant(g.name)["status"]["phase"] == "TokenIssued" and env.leases() == []

    ran = len(env.audit_records())
    assert run_gateway(settings_for(env, g, token)) == EXIT_REFUSED
    assert env.replicas() == 1, "the command ran a second time"
    status = env.grant(g.name)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "CommandAlreadyRan")
    assert len(env.leases()) == 1, "refused after the burn: the token is spent"
    again = env.audit_records()[ran:]
    assert [(r["event"], r["data"].get("reason")) for r in again] == [
        ("GatewayTokenBurned", None), ("GatewayRefused", "CommandAlreadyRan")]
    executing = [r for r in env.audit_records() if r["event"] == "GatewayExecuting"]
    assert len(executing) == 1 and f"audit seq {executing[0]['seq']}" in \
        again[1]["data"]["message"]
    # presented once more, the token is a replay: the cluster remembers this time
    assert run_gateway(settings_for(env, g, token)) == EXIT_REPLAY
    assert env.replicas() == 1
    assert executing[0]["data"]["approval_uid"] == g.approval["metadata"]["uid"]
