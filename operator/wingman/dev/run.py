"""``wingman dev run``: Wingman live in one command, on a local control plane or your cluster.

When no cluster is configured (no ``KUBECONFIG``, no ``~/.kube/config``), it starts the real
local control plane (``wingman.dev.cluster``) with a real node joined (``wingman.dev.kubelet``:
kubelet, kube-proxy, kube-scheduler, containerd), builds the image from the Dockerfile
(``.ci/image`` in a private Docker Engine) and imports it into the node, installs the chart
with the TEST values and that image, so the operator, preview and gateway pods run as real
containers as they would in a cluster, and submits a demo request as a worker: a rollout
restart of a demo Deployment that is reviewed, auto-approved, granted, executed by the gateway
and audited (on a real PersistentVolume).

``WINGMAN_DEV_NODE=harness`` (or a machine where the real node cannot run: not root, no
containerd/CNI plugins, no dockerd to build the image; it says why) falls back to the node
harness (``wingman.dev.node``): the operator runs as a local process with the operator
ServiceAccount's own token (so RBAC applies to it exactly as in a cluster) and gateway pods run
as local processes. An operator run here is told the test values' gateway targets
and the rules its Role there grants (:func:`gateway_env`), where the chart binds the executor,
so its review panel holds a command the executor would be refused, as in a cluster.

With a configured cluster it installs the chart there with the operator's Deployment scaled to
zero and runs the operator locally against it (the gateway Jobs then run on the cluster's
nodes with the image the values name).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config as k8s_config

from wingman import kube
from wingman.dev.cluster import LocalCluster
from wingman.errors import ClusterError, ConfigError

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "wingman"
TEST_VALUES = REPO / "manifests" / "test" / "values.yaml"
NAMESPACE = "wingman-test"
APPS = "apps"
WORKER = ("alice", ["wingman:workers"])
DEMO_COMMAND = f"kubectl rollout restart deployment/web -n {APPS}"
#: Who runs the pods of the local control plane: "real" (kubelet + containerd, the default) or
#: "harness" (the node harness, the fallback).
NODE_ENV = "WINGMAN_DEV_NODE"
#: Where the operator run here listens for its health and metrics (unless
#: ``WINGMAN_LISTEN_ADDRESS`` says otherwise): this machine only, not every network it is on
LISTEN_ADDRESS = "127.0.0.1"
NODE_MODES = ("real", "harness")
IMAGE_TAG = "wingman:dev"

DEMO_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": APPS},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
        },
    },
}


def configured_kubeconfig() -> Path | None:
    """The kubeconfig of a configured cluster (the first existing file ``KUBECONFIG`` names),
    or None when there is none. ``KUBECONFIG`` naming a directory or only missing files is a
    ConfigError rather than a cluster that kubectl and helm then cannot reach."""
    names = [name for name in os.environ.get("KUBECONFIG", "").split(os.pathsep) if name]
    if names:
        for name in names:  # a missing one is skipped, as kubectl does
            if Path(name).exists() and not Path(name).is_file():
                raise ConfigError(f"KUBECONFIG names {name}, which is not a regular file (a "
                                  "directory, a FIFO or a device); name the kubeconfig files "
                                  f"themselves, separated by '{os.pathsep}'")
        existing = [Path(name) for name in names if Path(name).is_file()]
        if not existing:
            raise ConfigError(f"KUBECONFIG={os.pathsep.join(names)}: no such file; fix "
                              "KUBECONFIG, or unset it: then the cluster ~/.kube/config "
                              "names is used or, without that file, a local control plane "
                              "is started")
        return existing[0]
    default = Path.home() / ".kube" / "config"
    return default if default.is_file() else None


def current_context() -> tuple[str, Path]:
    """The current context kubectl uses and the kubeconfig file it comes from
    (:func:`wingman.kube.current_context`: the first file ``KUBECONFIG`` names that sets
    ``current-context`` wins). ConfigError when a file is not YAML or no file sets one: kubectl
    would then have no cluster to use."""
    names = [name for name in os.environ.get("KUBECONFIG", "").split(os.pathsep) if name]
    paths = [Path(name) for name in names] or [Path.home() / ".kube" / "config"]
    try:
        found = kube.current_context([str(path) for path in paths])
    except k8s_config.ConfigException as exc:
        raise ConfigError(f"{exc}; 'kubectl config view --kubeconfig <file>' shows what is "
                          "wrong") from None
    if found is not None:
        return found
    shown = os.pathsep.join(str(path) for path in paths if path.is_file())
    raise ConfigError(f"no current context: none of the kubeconfig files ({shown}) sets "
                      "current-context, so kubectl has no cluster to use; pick one with "
                      "'kubectl config use-context <name>', or unset KUBECONFIG and move "
                      "~/.kube/config away for a local control plane")


def _say(msg: str) -> None:
    print(f"wingman dev: {msg}", flush=True)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop everything this command started, as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


#: The signals that stop ``wingman dev run``, ``wingman dev cluster`` and the benches.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Stopped` (a KeyboardInterrupt) and SIGINT into a
    KeyboardInterrupt for the duration, so that every ``finally`` and ExitStack callback runs:
    the control plane, the node harness and the operator are stopped whatever ends the
    command. SIGINT gets its handler here too: a command started in the background by a
    non-interactive shell (``cmd &`` in a script) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt of its own, so Ctrl-C or ``kill -INT`` would leave it, and
    everything it started, running.

    Once one of them arrived, the clean-up runs to its end: a further SIGINT, SIGTERM or SIGHUP
    (an impatient second Ctrl-C) is ignored, and the first one says so on stderr."""
    said = False

    def cleaning_up(signum: int, _frame: object) -> None:
        nonlocal said
        if not said:
            said = True
            # os.write: the main thread may be inside a print when the handler runs
            os.write(2, f"{signal.Signals(signum).name} ignored: clean-up in progress "
                        "(everything started is being stopped), wait for it\n".encode())

    def raise_stopped(signum: int, _frame: object) -> None:
        for sig in SIGNALS:  # a second signal never cuts the clean-up
            signal.signal(sig, cleaning_up)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, raise_stopped) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(exc: KeyboardInterrupt) -> int:
    name = exc.args[0] if isinstance(exc, Stopped) else "Ctrl-C"
    _say(f"{name}: stopped everything this command started")
    return 0


def cluster_main() -> int:
    """Start a local control plane and wait until interrupted (Ctrl-C, SIGTERM, SIGHUP)."""
    with stopping_on_signals():
        try:
            cluster = LocalCluster.start()
        except KeyboardInterrupt as exc:
            return _stopped(exc)
        try:
            _say(f"local control plane at {cluster.server}")
            _say(f"export KUBECONFIG={cluster.kubeconfig}")
            _say("press Ctrl-C to stop")
            while True:
                signal.pause()
        except KeyboardInterrupt as exc:
            return _stopped(exc)
        finally:
            cluster.stop()


#: the operator Deployment's variables that say where the chart binds the executor and what
#: its Role there grants (``wingman.targetNamespaces``, ``wingman.targetRules``)
GATEWAY_VARIABLES = ("WINGMAN_GATEWAY_TARGETS", "WINGMAN_GATEWAY_TARGET_RULES")


def gateway_env(values: Path = TEST_VALUES) -> dict[str, str]:
    """``WINGMAN_GATEWAY_TARGETS`` and ``WINGMAN_GATEWAY_TARGET_RULES`` as the chart installed
    with ``values`` gives its operator's Deployment (``helm template``: the chart's own
    defaults for a target without rules, never a copy of them). The chart binds the executor
    there and nowhere else, so the operator run here judges commands by them (the review
    panel's targets rule), as the chart's operator does."""
    from wingman.dev import tools as devtools

    # (helm renders for Kubernetes 1.20 without a cluster, which the chart refuses: the oldest
    # release it supports renders the same variables)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    oldest = str(chart["kubeVersion"]).removeprefix(">=").split("-")[0].strip()
    rendered = subprocess.run(
        [str(devtools.tool_path("helm")), "template", "wingman", str(CHART), "-n", NAMESPACE,
         "-f", str(values), "--kube-version", oldest,
         "--show-only", "templates/operator-deployment.yaml"],
        capture_output=True, text=True, timeout=120, check=False)
    if rendered.returncode != 0:
        raise ConfigError(f"helm template of {CHART} with {values} failed: "
                          f"{rendered.stderr.strip()[:500]}")
    deployment = yaml.safe_load(rendered.stdout) or {}
    containers = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for c in containers for e in c.get("env") or []}
    return {name: env[name] for name in GATEWAY_VARIABLES}


def _operator_env(kubeconfig: Path, audit_path: Path, gateway_image: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KUBECONFIG": str(kubeconfig),
        "WINGMAN_NAMESPACE": NAMESPACE,
        "WINGMAN_ENVIRONMENT": "test",
        "WINGMAN_POLICY_FILE": str(audit_path.parent / "policy.yaml"),
        "WINGMAN_AUDIT_TARGET": str(audit_path),
        # gateway pods mount the audit directory as this claim; the node harness maps it to
        # the same local directory, so operator and gateway append to one chain
        "WINGMAN_AUDIT_VOLUME_CLAIM": "wingman-audit",
        "WINGMAN_GATEWAY_IMAGE": gateway_image,
        **gateway_env(),
        "WINGMAN_LOG_FORMAT": "text",
    })
    _listen_locally(env)
    return env


def _listen_locally(env: dict[str, str]) -> None:
    """The operator's health and metrics on this machine only, unless the caller's
    ``WINGMAN_LISTEN_ADDRESS`` names another address."""
    if not env.get("WINGMAN_LISTEN_ADDRESS", "").strip():
        env["WINGMAN_LISTEN_ADDRESS"] = LISTEN_ADDRESS


def _wait_phase(cluster_kubectl: Any, kind: str, name: str, phases: tuple[str, ...],
                timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        res = cluster_kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json", check=False)
        if res.returncode == 0:
            obj: dict[str, Any] = json.loads(res.stdout)
            phase = obj.get("status", {}).get("phase", "")
            if phase != last:
                _say(f"{kind}/{name}: {phase or 'Pending'}")
                last = phase
            if phase in phases:
                return obj
        time.sleep(1)
    raise ClusterError(f"{kind}/{name} did not reach {'/'.join(phases)} within {timeout:.0f}s")


def run_main(*, demo: bool = True, exit_after_demo: bool = False) -> int:
    """Start (or use) a cluster, install Wingman, run the operator, and show a demo. Ctrl-C,
    SIGTERM and SIGHUP stop everything it started."""
    with stopping_on_signals():
        try:
            if configured_kubeconfig() is not None:
                return _run_on_configured_cluster(exit_after_start=exit_after_demo)
            return _run_locally(demo=demo, exit_after_demo=exit_after_demo)
        except KeyboardInterrupt as exc:
            return _stopped(exc)


def node_mode() -> str:
    """The node the local control plane gets: ``WINGMAN_DEV_NODE``, "real" by default."""
    mode = os.environ.get(NODE_ENV, "real").strip() or "real"
    if mode not in NODE_MODES:
        raise ConfigError(f"{NODE_ENV}={mode!r} must be one of {', '.join(NODE_MODES)} "
                          "(real: kubelet and containerd run the pods; harness: the node "
                          "harness plays the node)")
    return mode


def _real_node_unavailable() -> str | None:
    from wingman.dev import kubelet
    from wingman.dev.engine import _need

    reason = kubelet.unavailable()
    if reason is not None:
        return reason
    try:
        _need("dockerd", "docker.io")  # builds the image the node runs
    except ClusterError as exc:
        return exc.message
    if not (REPO / ".ci" / "image").is_file():
        return "the image is built from a repository checkout (.ci/image), and there is none"
    return None


def _build_image(work: Path) -> Path:
    """The image from this checkout's Dockerfile on the locally made Debian base (what the
    container tier builds), saved as an archive for containerd."""
    from wingman.dev.engine import DockerEngine, docker_cli

    def script(*argv: str, env: dict[str, str] | None = None) -> str:
        res = subprocess.run(["bash", *argv], capture_output=True, text=True, cwd=REPO,
                             env=env, timeout=1800, check=False)
        if res.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed (exit {res.returncode}):\n"
                               f"{res.stderr.strip()[-3000:]}", reason="ImageBuildFailed")
        return res.stdout.strip().splitlines()[-1]

    with DockerEngine.start() as engine:
        base_tar = Path(script(str(REPO / ".ci" / "base-image")))
        base = f"wingman-base:{base_tar.parent.name}"
        engine.import_rootfs(base_tar, base)
        env = engine.env()
        env.update(DOCKER=docker_cli(), BASE=base)
        script(str(REPO / ".ci" / "image"), IMAGE_TAG, env=env)
        archive = work / "image.tar"
        engine.docker("save", "-o", str(archive), IMAGE_TAG, timeout=900)
    return archive


def _run_locally(*, demo: bool, exit_after_demo: bool) -> int:
    mode = node_mode()
    if mode == "real":
        reason = _real_node_unavailable()
        if reason is None:
            return _run_on_real_node(demo=demo, exit_after_demo=exit_after_demo)
        _say(f"the real node cannot run here ({reason}); falling back to the node harness "
             f"({NODE_ENV}=harness selects it directly)")
    return _run_with_harness(demo=demo, exit_after_demo=exit_after_demo)


def _run_on_real_node(*, demo: bool, exit_after_demo: bool) -> int:
    from wingman.dev.kubelet import PAUSE_IMAGE, RealNode

    with contextlib.ExitStack() as stack:
        _say("no cluster configured (KUBECONFIG unset, no ~/.kube/config): "
             "starting a local control plane with a real node")
        work = Path(tempfile.mkdtemp(prefix="wingman-dev-"))
        stack.callback(shutil.rmtree, work, True)
        _say("building the image from the Dockerfile (.ci/image; cached layers make a "
             "rebuild quick)")
        started = time.monotonic()
        archive = _build_image(work)
        _say(f"image {IMAGE_TAG} built in {time.monotonic() - started:.0f}s")
        node = RealNode()
        stack.callback(node.stop)
        cluster = LocalCluster.start(address=node.api_address, nodes=True)
        stack.callback(cluster.stop)
        stack.callback(node.stop_processes)  # before the cluster stops: see RealNode.stop
        _say(f"control plane ready at {cluster.server}; "
             f"admin kubeconfig: {cluster.kubeconfig}")
        node.start(cluster)
        node.import_image(archive)
        archive.unlink()
        _say(f"node {node.node_name} Ready (kubelet, kube-proxy, kube-scheduler, containerd "
             f"in network namespace {node.netns}; logs in {node.workdir})")
        audit_dir = work / "audit"
        audit_dir.mkdir()
        os.chown(audit_dir, 65532, 65532)  # a hostPath volume: the pods' user writes it
        cluster.apply_crds(REPO / "crds")
        cluster.kubectl("create", "namespace", APPS)
        cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "wingman-audit"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain",
                     "hostPath": {"path": str(audit_dir), "type": "Directory"},
                     "claimRef": {"namespace": NAMESPACE, "name": "wingman-audit"}}}))
        repo, tag = IMAGE_TAG.rsplit(":", 1)
        cluster.helm("install", "wingman", str(CHART), "-n", NAMESPACE, "--create-namespace",
                     "-f", str(TEST_VALUES), "--set", "operator.replicas=1",
                     "--set", "audit.file.persistence.enabled=true",
                     "--set", f"image.repository={repo}", "--set", f"image.tag={tag}")
        _say(f"chart installed in namespace {NAMESPACE} (test values, image {IMAGE_TAG})")
        web = json.loads(json.dumps(DEMO_DEPLOYMENT))
        web["spec"]["template"]["spec"]["containers"][0].update(
            image=PAUSE_IMAGE, imagePullPolicy="Never")  # no registry here: a local image
        cluster.kubectl("apply", "-f", "-", input=json.dumps(web))
        deadline = time.monotonic() + 300
        while True:
            pods = json.loads(cluster.kubectl(
                "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator",
                "-o", "json").stdout)["items"]
            if any(p["status"].get("phase") == "Running" for p in pods):
                break
            if time.monotonic() > deadline:
                raise ClusterError("the operator pod did not start within 300s: "
                                   + cluster.kubectl("get", "pods", "-A", "-o", "wide").stdout)
            time.sleep(1)
        _say(f"operator pod running on {node.node_name}; "
             f"kubectl logs -n {NAMESPACE} deploy/wingman-operator")
        ok = _demo(cluster, audit_dir / "audit.jsonl") if demo else True
        if exit_after_demo:
            return 0 if ok else 1
        _say(f"export KUBECONFIG={cluster.kubeconfig} to look around; Ctrl-C (or SIGTERM, "
             "SIGHUP) stops everything")
        while True:
            signal.pause()


def _run_with_harness(*, demo: bool, exit_after_demo: bool) -> int:
    with contextlib.ExitStack() as stack:
        _say("no cluster configured (KUBECONFIG unset, no ~/.kube/config): "
             "starting a local control plane")
        cluster = LocalCluster.start()
        stack.callback(cluster.stop)
        _say(f"control plane ready at {cluster.server}; "
             f"admin kubeconfig: {cluster.kubeconfig}")
        work = Path(tempfile.mkdtemp(prefix="wingman-dev-"))
        stack.callback(shutil.rmtree, work, True)  # last: after the node and the operator
        image = "ghcr.io/wingman-dev/wingman:0.1.0"
        cluster.apply_crds(REPO / "crds")
        cluster.kubectl("create", "namespace", APPS)
        cluster.helm("install", "wingman", str(CHART), "-n", NAMESPACE, "--create-namespace",
                     "-f", str(TEST_VALUES), "--set", "operator.replicas=0",
                     "--set", "audit.file.persistence.enabled=false",
                     "--set", f"image.repository={image.rsplit(':', 1)[0]}",
                     "--set", f"image.tag={image.rsplit(':', 1)[1]}")
        _say(f"chart installed in namespace {NAMESPACE} (test values)")
        cluster.kubectl("apply", "-f", "-", input=json.dumps(DEMO_DEPLOYMENT))

        policy = cluster.kubectl("get", "configmap", "wingman-policy", "-n", NAMESPACE,
                                 "-o", "jsonpath={.data.policy\\.yaml}").stdout
        audit_path = work / "audit.jsonl"
        (work / "policy.yaml").write_text(policy)
        token = cluster.sa_token(NAMESPACE, "wingman-operator", expiration_seconds=86400)
        op_kubeconfig = cluster.token_kubeconfig(token, "wingman-operator")

        from wingman.dev.node import NodeHarness

        harness = NodeHarness(
            cluster=cluster, namespaces=[NAMESPACE], workdir=work / "node",
            gateway_image=image, volume_dirs={"wingman-audit": audit_path.parent},
        )
        harness.start()
        stack.callback(harness.stop)
        _say("node harness running: gateway pods run as local processes with their real "
             "ServiceAccount tokens")

        log = open(work / "operator.log", "wb")
        stack.callback(log.close)
        operator = subprocess.Popen(
            [sys.executable, "-m", "wingman.cli", "operator"],
            env=_operator_env(op_kubeconfig, audit_path, image),
            stdout=log, stderr=subprocess.STDOUT,
        )
        stack.callback(_terminate, operator)
        _say(f"operator running (pid {operator.pid}); log: {work / 'operator.log'}")

        ok = _demo(cluster, audit_path) if demo else True
        if exit_after_demo:
            return 0 if ok else 1
        _say(f"export KUBECONFIG={cluster.kubeconfig} to look around; Ctrl-C (or SIGTERM, "
             "SIGHUP) stops everything")
        while operator.poll() is None:
            time.sleep(1)
        return 0 if operator.returncode in (None, 0) else 1


def _demo(cluster: LocalCluster, audit_path: Path) -> bool:
    """Submit the demo request and grant; True when the command ran and the audit verifies."""
    user, groups = WORKER
    request = {
        "apiVersion": "wingman.dev/v1alpha1",
        "kind": "ApprovalRequest",
        "metadata": {"name": "demo-restart", "namespace": NAMESPACE},
        "spec": {
            "requester": user,
            "environment": "test",
            "instruction": "Restart the web Deployment to pick up its new configuration.",
            "commands": [DEMO_COMMAND],
        },
    }
    _say(f"as worker {user!r}: kubectl apply ApprovalRequest demo-restart ({DEMO_COMMAND})")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(request), user=user, groups=groups)

    def kubectl(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(*a, check=check)

    ar = _wait_phase(kubectl, "approvalrequest", "demo-restart",
                     ("AutoApproved", "Approved", "AwaitingDecision", "Rejected", "Expired"))
    consensus = ar.get("status", {}).get("consensus", {})
    for vote in consensus.get("votes", []):
        _say(f"  vote {vote.get('voter')}: {vote.get('verdict')} ({vote.get('risk')}) "
             f"{vote.get('rationale', '')}")
    if ar["status"]["phase"] not in ("AutoApproved", "Approved"):
        _say("the demo request was not auto-approved; see `kubectl wingman describe`")
        return False
    grant = {
        "apiVersion": "wingman.dev/v1alpha1",
        "kind": "ExecutionGrant",
        "metadata": {"name": "demo-restart-1", "namespace": NAMESPACE},
        "spec": {"approvalRef": {"name": "demo-restart"}, "command": DEMO_COMMAND,
                 "requester": user},
    }
    _say(f"as worker {user!r}: kubectl apply ExecutionGrant demo-restart-1")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(grant), user=user, groups=groups)
    eg = _wait_phase(kubectl, "executiongrant", "demo-restart-1",
                     ("Succeeded", "Failed", "Denied", "Expired"), timeout=180)
    st = eg.get("status", {})
    _say(f"grant finished: {st.get('phase')} exit={st.get('exitCode')} "
         f"{st.get('reason', '')}")
    if st.get("output"):
        _say(f"  output: {st['output'].strip()}")
    restarted = cluster.kubectl(
        "get", "deployment", "web", "-n", APPS, "-o",
        "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    ).stdout
    _say(f"deployment/web restartedAt: {restarted or '(not restarted)'}")
    from wingman.audit import verify_main

    return verify_main(str(audit_path)) == 0 and st.get("phase") == "Succeeded" \
        and bool(restarted)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_on_configured_cluster(*, exit_after_start: bool = False) -> int:
    """Install the chart (operator Deployment scaled to zero) and run the operator here.

    The operator uses your kubeconfig's credentials; the policy is the one the chart rendered
    and the audit trail a local file. Gateway Jobs run on the cluster's own nodes with the
    image the values name, so no demo is submitted: try ``kubectl wingman request``.
    """
    context, kubeconfig = current_context()
    _say(f"using the cluster configured in {kubeconfig} (its current-context {context})")
    from wingman.dev import tools as devtools

    helm, kubectl = str(devtools.tool_path("helm")), str(devtools.tool_path("kubectl"))

    def run(*argv: str, input: str | None = None) -> str:
        res = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ClusterError(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed: "
                               f"{res.stderr.strip()[-2000:]}")
        return res.stdout

    run(kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    # the test values' gateway target namespace must exist for its Role and RoleBinding
    run(kubectl, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APPS}}))
    run(helm, "upgrade", "--install", "wingman", str(CHART), "-n", NAMESPACE,
        "--create-namespace", "-f", str(TEST_VALUES), "--set", "operator.replicas=0",
        "--set", "audit.file.persistence.enabled=false")
    policy = run(kubectl, "get", "configmap", "wingman-policy", "-n", NAMESPACE, "-o",
                 "jsonpath={.data.policy\\.yaml}")
    work = Path(tempfile.mkdtemp(prefix="wingman-dev-"))
    try:
        return _run_operator_here(work, policy, kubectl, exit_after_start=exit_after_start)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_operator_here(work: Path, policy: str, kubectl: str, *, exit_after_start: bool
                       ) -> int:
    """Run the operator in this terminal against the configured cluster, its policy and audit
    trail in ``work``, until it stops (or, with ``exit_after_start``, it has started)."""
    (work / "policy.yaml").write_text(policy)
    env = dict(os.environ)
    env.update({"WINGMAN_NAMESPACE": NAMESPACE, "WINGMAN_ENVIRONMENT": "test",
                "WINGMAN_POLICY_FILE": str(work / "policy.yaml"),
                "WINGMAN_AUDIT_TARGET": str(work / "audit.jsonl"),
                **gateway_env(), "WINGMAN_LOG_FORMAT": "text"})
    _listen_locally(env)
    _say(f"chart installed in {NAMESPACE}; running the operator locally (audit: "
         f"{work / 'audit.jsonl'}); Ctrl-C stops it")
    proc = subprocess.Popen([sys.executable, "-m", "wingman.cli", "operator"], env=env)
    try:
        if exit_after_start:
            # started = it holds its signing key in the cluster (its first act), still running
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                probe = subprocess.run([kubectl, "get", "secret", "wingman-signing-key", "-n",
                                        NAMESPACE, "-o", "name"], capture_output=True,
                                       text=True, check=False)
                if probe.returncode == 0:
                    return 0
                time.sleep(1)
            return 1
        proc.wait()
        return 0 if proc.returncode in (None, 0) else 1
    finally:
        _terminate(proc)


__all__ = [
    "GATEWAY_VARIABLES",
    "NODE_ENV",
    "NODE_MODES",
    "cluster_main",
    "configured_kubeconfig",
    "current_context",
    "gateway_env",
    "node_mode",
    "run_main",
]
