"""The preview on the real control plane: ``wingman preview`` as its pod runs it, the proxy that
makes every write a dry run, and admission that refuses the preview identity anything else.

The chart is installed for real (test values, this module's target namespace); the preview
process authenticates with a real TokenRequest token of ``wingman-preview`` and writes its
result where the kubelet reads a termination message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import (
    WORKER,
    KubectlAs,
    approval_request,
    installed,
    sa_user,
    worker_groups,
)
from wingman.dev import tools as devtools
from wingman.dev.cluster import LocalCluster
from wingman.model import preview as pv

pytestmark = pytest.mark.integration


class Env:
    def __init__(self, cluster: LocalCluster, ns: str, apps: str, work: Path) -> None:
        self.cluster, self.ns, self.apps, self.work = cluster, ns, apps, work

    def deployment(self) -> dict[str, Any]:
        out = self.cluster.kubectl("get", "deployment", "web", "-n", self.apps, "-o", "json")
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def request(self, *commands: str) -> tuple[str, str]:
        name = f"r-{uuid.uuid4().hex[:6]}"
        body = approval_request(name, requester=WORKER, environment="test", commands=commands)
        self.cluster.kubectl("create", "-n", self.ns, "-f", "-", input=yaml.safe_dump(body),
                             user=WORKER, groups=worker_groups("test"))
        uid = self.cluster.kubectl("get", "ar", name, "-n", self.ns, "-o",
                                   "jsonpath={.metadata.uid}").stdout
        return name, uid

    def sa_dir(self, account: str) -> Path:
        directory = self.work / f"sa-{account}-{uuid.uuid4().hex[:6]}"
        directory.mkdir()
        (directory / "token").write_text(self.cluster.sa_token(self.ns, account))
        (directory / "ca.crt").write_bytes(self.cluster.ca_file.read_bytes())
        (directory / "namespace").write_text(self.ns)
        return directory

    def preview(self, name: str, uid: str, *, account: str = "wingman-preview"
                ) -> tuple[subprocess.CompletedProcess[str], pv.Preview | None]:
        run = self.work / f"run-{uuid.uuid4().hex[:6]}"
        run.mkdir()
        policy = self.cluster.kubectl("get", "configmap", "wingman-policy", "-n", self.ns,
                                      "-o", "jsonpath={.data.policy\\.yaml}").stdout
        (run / "policy.yaml").write_text(policy)
        host, port = self.cluster.server.rsplit("//", 1)[1].rsplit(":", 1)
        env = {
            "PATH": f"{devtools.tool_path('kubectl').parent}:/usr/bin:/bin",
            "HOME": str(run), "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port,
            "WINGMAN_NAMESPACE": self.ns, "WINGMAN_ENVIRONMENT": "test",
            "WINGMAN_APPROVAL_NAME": name, "WINGMAN_APPROVAL_UID": uid,
            "WINGMAN_SERVICEACCOUNT_DIR": str(self.sa_dir(account)),
            "WINGMAN_POLICY_FILE": str(run / "policy.yaml"),
            "WINGMAN_TERMINATION_LOG": str(run / "termination-log"),
            "WINGMAN_LOG_FORMAT": "json", "WINGMAN_POD_NAME": "preview-test",
        }
        proc = subprocess.run([sys.executable, "-m", "wingman.cli", "preview"], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        log = run / "termination-log"
        return proc, pv.decode(log.read_text()) if log.exists() else None


@pytest.fixture(scope="module")
def env(cluster: LocalCluster, crds: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:6]
    ns, apps = f"wm-pv-{suffix}", f"apps-{suffix}"
    values = {"policy.allowlist": [
        f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} -n {apps}",
        f"kubectl rollout restart deployment/{{name}} -n {apps}",
        f"kubectl delete deployment/{{name}} -n {apps}",
        f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} -n {apps} -o yaml",
        f"kubectl scale deployment/{{name}} --replicas={{int:0..10}} -n {apps} --v=9",
    ]}
    with installed(cluster, "test", namespace=ns, target_namespace=apps, values=values):
        cluster.kubectl("create", "deployment", "web", "-n", apps,
                        "--image=registry.k8s.io/pause:3.9", "--replicas=1")
        found = Env(cluster, ns, apps, tmp_path_factory.mktemp("preview"))
        _settled(found)
        yield found


def _settled(env: Env, timeout: float = 30) -> None:
    """Wait until the controllers stopped writing the new Deployment's status (its
    resourceVersion holds still), so a test compares the version the preview saw."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        meta = env.deployment()["metadata"]
        if meta["resourceVersion"] == last:
            return
        last = meta["resourceVersion"]
        time.sleep(1.5)
    raise AssertionError("the Deployment's status kept changing")


def test_a_scale_preview_shows_the_replica_change_and_the_targets_version(env: Env) -> None:
    before = env.deployment()
    scale = f"kubectl scale deployment/web --replicas=3 -n {env.apps}"
    restart = f"kubectl rollout restart deployment/web -n {env.apps}"
    missing = f"kubectl scale deployment/ghost --replicas=2 -n {env.apps}"
    delete = f"kubectl delete deployment/web -n {env.apps}"
    outside = f"kubectl scale deployment/web --replicas=30 -n {env.apps}"
    name, uid = env.request(scale, restart, missing, delete, outside)
    proc, result = env.preview(name, uid)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result is not None and result.approval_uid == uid
    by = {c.command: c for c in result.commands}

    assert by[scale].outcome is pv.Outcome.PREVIEWED, by[scale]
    (target,) = by[scale].targets
    meta = before["metadata"]
    assert (target.kind, target.namespace, target.name) == ("Deployment", env.apps, "web")
    assert (target.uid, target.generation, target.resource_version) == (
        meta["uid"], meta["generation"], meta["resourceVersion"])
    assert "-  replicas: 1\n+  replicas: 3" in by[scale].diff

    # kubectl has no --dry-run for rollout restart: the proxy made its write a dry run
    assert by[restart].outcome is pv.Outcome.PREVIEWED
    assert "kubectl.kubernetes.io/restartedAt" in by[restart].diff

    assert by[missing].outcome is pv.Outcome.TARGET_MISSING
    assert '"ghost" not found' in by[missing].message
    # the gateway's default rules cannot delete: the preview shows the refusal up front
    assert by[delete].outcome is pv.Outcome.FORBIDDEN
    assert by[outside].outcome is pv.Outcome.NOT_PREVIEWABLE
    assert "allowlist" in by[outside].message

    after = env.deployment()
    assert after["metadata"]["generation"] == meta["generation"], "nothing changed for real"
    assert after["spec"]["replicas"] == 1
    assert "restartedAt" not in json.dumps(after["spec"]["template"])
    token = (env.work.glob("sa-wingman-preview-*/token"))
    for path in token:
        assert path.read_text() not in proc.stderr


def test_what_kubectl_prints_never_reaches_the_preview(env: Env) -> None:
    # the requester chooses the output format; kubectl would print the whole object (for a
    # Secret: its data). The preview reads kubectl's errors, never its stdout.
    # kubectl's verbosity is the preview's: at --v=9 it would log every response body on
    # stderr, which the preview reads for errors
    live = env.deployment()["metadata"]
    printing = f"kubectl scale deployment/web --replicas=2 -n {env.apps} -o yaml"
    logging = f"kubectl scale deployment/web --replicas=2 -n {env.apps} --v=9"
    name, uid = env.request(printing, logging)
    proc, result = env.preview(name, uid)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result is not None
    for command in result.commands:
        assert command.outcome is pv.Outcome.PREVIEWED, command
        assert command.message == "dry run accepted", command.message
        assert "-  replicas: 1\n+  replicas: 2" in command.diff
        assert live["uid"] not in command.message and "apiVersion" not in command.message


def test_the_proxy_makes_every_write_a_dry_run_whoever_it_acts_for(env: Env) -> None:
    # an identity holding the executor's rules (it may really restart and scale here), which
    # no admission policy confines to dry runs: only the proxy stands between the command and
    # the change. (Not the executor itself: only the gateway may request its tokens.)
    writer = f"writer-{uuid.uuid4().hex[:6]}"
    env.cluster.kubectl("create", "serviceaccount", writer, "-n", env.ns)
    roles = env.cluster.kubectl("get", "roles", "-n", env.apps, "-o", "name").stdout.split()
    (role,) = [r.removeprefix("role.rbac.authorization.k8s.io/") for r in roles
               if r.endswith("-gateway")]
    env.cluster.kubectl("create", "rolebinding", writer, "-n", env.apps, f"--role={role}",
                        f"--serviceaccount={env.ns}:{writer}")
    # ... and reads the request it previews, as the preview's own account does
    env.cluster.kubectl("create", "rolebinding", writer, "-n", env.ns, "--role=wingman-preview",
                        f"--serviceaccount={env.ns}:{writer}")
    before = env.deployment()
    name, uid = env.request(f"kubectl rollout restart deployment/web -n {env.apps}",
                            f"kubectl scale deployment/web --replicas=4 -n {env.apps}")
    proc, result = env.preview(name, uid, account=writer)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result is not None
    assert [c.outcome for c in result.commands] == [pv.Outcome.PREVIEWED] * 2
    after = env.deployment()
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["replicas"] == before["spec"]["replicas"]


def test_admission_refuses_the_preview_identity_anything_but_a_dry_run(env: Env) -> None:
    user: KubectlAs = {"user": sa_user(env.ns, "wingman-preview"),
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{env.ns}",
                       "system:authenticated"]}
    generation = env.deployment()["metadata"]["generation"]
    real = env.cluster.kubectl("scale", "deployment/web", "--replicas=5", "-n", env.apps,
                               check=False, **user)
    assert real.returncode != 0
    assert "preview-dry-run" in real.stderr and "may only make server-side dry runs" in real.stderr
    patch = env.cluster.kubectl("annotate", "deployment/web", "x=y", "-n", env.apps,
                                check=False, **user)
    assert patch.returncode != 0 and "preview-dry-run" in patch.stderr
    dry = env.cluster.kubectl("scale", "deployment/web", "--replicas=5", "-n", env.apps,
                              "--dry-run=server", check=False, **user)
    assert dry.returncode == 0, dry.stderr
    assert env.deployment()["metadata"]["generation"] == generation
    # with every right RBAC could give, the identity still cannot act: only admission stands
    admin: KubectlAs = {"user": user["user"], "groups": ["system:masters"]}
    real = env.cluster.kubectl("delete", "deployment/web", "-n", env.apps, check=False, **admin)
    assert real.returncode != 0 and "preview-dry-run" in real.stderr
    assert env.deployment()["metadata"]["generation"] == generation
