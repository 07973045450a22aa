"""The image as built from the Dockerfile: every claim the Dockerfile, the chart and the
gateway Job make about it, checked by running it in the real Docker Engine.

User, read-only root filesystem, entrypoints, kubectl present and pinned, dependencies exactly
as locked, no installer and no development harness at run time, OCI labels.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from support.chart import find, render
from support.containers import REPO, Image, run
from wingman.dev.engine import DockerEngine
from wingman.operator import manifests
from wingman.settings import OperatorSettings

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _gateway_pod_spec(tmp_path: Path) -> dict[str, object]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("environment: test\n")
    job = manifests.gateway_job({"metadata": {"name": "g", "namespace": "n", "uid": "u"}},
                                OperatorSettings.from_env({"WINGMAN_POLICY_FILE": str(policy)}),
                                300)
    spec: dict[str, object] = job["spec"]["template"]["spec"]
    return spec


def _preview_pod_spec() -> dict[str, object]:
    job = manifests.preview_job({"metadata": {"name": "r", "namespace": "n", "uid": "u"}},
                                OperatorSettings.from_env({}))
    spec: dict[str, object] = job["spec"]["template"]["spec"]
    return spec


def _command(pod: dict[str, Any]) -> list[str]:
    (container,) = pod["containers"]
    command: list[str] = container["command"]
    return command


def _python(engine: DockerEngine, image: Image, code: str, *options: str
            ) -> subprocess.CompletedProcess[str]:
    return run(engine, image, "python3", "-c", code, options=options)


def test_the_image_runs_as_the_non_root_user_of_the_chart_and_the_gateway_job(
        engine: DockerEngine, image: Image, tmp_path: Path) -> None:
    values = yaml.safe_load((REPO / "charts/wingman/values.yaml").read_text())
    uid = values["operator"]["runAsUser"]
    pod = _gateway_pod_spec(tmp_path)
    assert pod["securityContext"]["runAsUser"] == uid  # type: ignore[index]
    assert image.inspect["Config"]["User"] == f"{uid}:{uid}"
    out = _python(engine, image, "import getpass, os; print(os.getuid(), os.getgid(), "
                  "getpass.getuser(), os.path.expanduser('~'))")
    assert out.returncode == 0, out.stderr
    # a named user (kopf derives its peering identity from it) whose home is the writable /tmp
    assert out.stdout.split() == [str(uid), str(uid), "wingman", "/tmp"]
    assert uid != 0


def test_the_entrypoints_run_on_a_read_only_root_filesystem(
        engine: DockerEngine, image: Image, tmp_path: Path) -> None:
    """What the chart's Deployment, the gateway Job and the helm test pod start: ``wingman``
    with a read-only root, all capabilities dropped, /tmp the only writable place."""
    locked = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
              "--tmpfs", "/tmp:size=16m")
    objs = render("test")
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    (test_pod,) = find(objs, "Pod", "wingman-verify-privileges")
    commands = {
        tuple(deployment["spec"]["template"]["spec"]["containers"][0]["args"][:2]),
        tuple(test_pod["spec"]["containers"][0]["args"][:2]),
        # the Jobs' wingman runs under the image's init (manifests.INIT)
        tuple(_command(_gateway_pod_spec(tmp_path))),
        tuple(_command(_preview_pod_spec())),
    }
    help_text = run(engine, image, "wingman", "--help", options=locked)
    assert help_text.returncode == 0, help_text.stderr
    for *init, program, sub in commands:
        assert program == "wingman" and init in ([], list(manifests.INIT))
        assert re.search(rf"\b{sub}\b", help_text.stdout), sub
        usage = run(engine, image, *init, program, sub, "--help", options=locked)
        assert usage.returncode == 0, (init, sub, usage.stderr)
        assert f"usage: wingman {sub}" in usage.stdout, usage.stdout
    # nothing but /tmp can be written, not even by the image's own user
    probe = run(engine, image, "python3", "-c",
                "import pathlib, sys\n"
                "pathlib.Path('/tmp/ok').write_text('x')\n"
                "for p in ('/opt/wingman/x', '/x', '/usr/local/bin/x'):\n"
                "    try:\n"
                "        pathlib.Path(p).write_text('x')\n"
                "    except OSError as exc:\n"
                "        print(p, exc.errno)\n"
                "    else:\n"
                "        sys.exit(p + ' was writable')\n", options=locked)
    assert probe.returncode == 0, probe.stderr
    assert [line.split()[1] for line in probe.stdout.splitlines()] == ["30", "30", "30"]  # EROFS
    # the default command is the help text
    assert image.inspect["Config"]["Cmd"] == ["wingman", "--help"]


def test_kubectl_is_the_pinned_release_the_tests_run(engine: DockerEngine, image: Image) -> None:
    pinned = re.search(r"^require k8s.io/kubernetes (v[\d.]+)$",
                       (REPO / ".ci/tools/kube/go.mod").read_text(), re.M)
    assert pinned is not None
    out = run(engine, image, "kubectl", "version", "--client", "-o", "json")
    assert out.returncode == 0, out.stderr
    client = json.loads(out.stdout)["clientVersion"]
    assert client["gitVersion"] == pinned.group(1)
    floor = re.search(r"^go_supported=([\d.]+)$", (REPO / ".ci/image").read_text(), re.M)
    assert floor is not None
    go = tuple(int(x) for x in client["goVersion"].removeprefix("go").split(".")[:2])
    assert go >= tuple(int(x) for x in floor.group(1).split(".")), client["goVersion"]


def test_dependencies_are_exactly_the_lock_and_nothing_installs_at_run_time(
        engine: DockerEngine, image: Image) -> None:
    locked = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            req = Requirement(line.rstrip(" \\"))
            locked[req.name.lower().replace("_", "-")] = str(req.specifier).removeprefix("==")
    out = _python(engine, image,
                  "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']"
                  ".lower().replace('_', '-'): d.version for d in m.distributions()}))")
    assert out.returncode == 0, out.stderr
    installed = json.loads(out.stdout)
    assert installed.pop("wingman-operator") == PYPROJECT["project"]["version"]
    assert installed == locked
    checks = _python(engine, image, "\n".join([
        "import importlib.util, os, shutil",
        "print('pip', importlib.util.find_spec('pip') is not None or bool(shutil.which('pip'))"
        " or bool(shutil.which('pip3')))",
        "print('setuptools', importlib.util.find_spec('setuptools') is not None)",
        "print('wingman.dev', importlib.util.find_spec('wingman.dev') is not None)",
        "wheels = [os.path.join(d, f) for root in ('/usr', '/opt', '/etc')",
        "          for d, _, fs in os.walk(root) for f in fs if f.endswith('.whl')]",
        "print('wheels', bool(wheels), *wheels)",
    ]))
    assert checks.returncode == 0, checks.stderr
    assert checks.stdout.split("\n")[:4] == [
        "pip False", "setuptools False", "wingman.dev False", "wheels False"], checks.stdout


def test_wingman_dev_says_it_needs_a_checkout(engine: DockerEngine, image: Image) -> None:
    out = run(engine, image, "wingman", "dev", "run")
    assert out.returncode == 2
    assert "needs a source checkout" in out.stderr


def test_the_image_carries_its_oci_labels(image: Image) -> None:
    labels = image.labels
    project = PYPROJECT["project"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] in (head, f"{head}-dirty")
    assert labels["org.opencontainers.image.title"] == "wingman"


def test_the_operator_runs_on_jemalloc_in_the_image(engine: DockerEngine, image: Image) -> None:
    """The image has the allocator the operator chooses by default (``auto``), and the
    operator's re-execution preloads it on the read-only root the chart runs it on."""
    locked = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
              "--tmpfs", "/tmp:size=16m")
    out = _python(engine, image, "from wingman.operator import memory; memory.use_malloc(); "
                  "print(memory.find_jemalloc(), memory.active(), memory.release())", *locked)
    assert out.returncode == 0, out.stderr
    path, active, released = out.stdout.split()
    assert path.endswith("/libjemalloc.so.2") and active == "jemalloc" and released == "True"
    dpkg = run(engine, image, "dpkg-query", "-W", "-f", "${Package} ${Version}",
               "libjemalloc2")
    assert dpkg.returncode == 0 and dpkg.stdout == "libjemalloc2 5.3.0-1", dpkg.stderr


# Python at start-up, before any of wingman's code (and so before any SIGTERM handler): it says
# so and waits, as a slow start (a loaded node, cold imports) would
_SLOW_START = "import time\nprint('python-started', flush=True)\ntime.sleep(60)\n"


def _start_slowly(engine: DockerEngine, image: Image, name: str, command: list[str],
                  hook: Path) -> None:
    """Start ``command`` in a container whose Python stops in ``sitecustomize`` (before
    ``wingman`` runs a line) and return once it is there."""
    engine.docker("create", "--name", name, "--network", "none", "--cap-drop", "ALL",
                  "--security-opt", "no-new-privileges", "-e", "PYTHONPATH=/tmp/hook",
                  image.tag, *command)
    engine.docker("cp", str(hook), f"{name}:/tmp/hook")
    engine.docker("start", name)
    deadline = time.monotonic() + 60
    while "python-started" not in engine.docker("logs", name).stdout:
        assert time.monotonic() < deadline, engine.docker("logs", name, check=False).stderr
        time.sleep(0.05)


def test_a_sigterm_before_wingman_handles_it_ends_the_jobs_container(
        engine: DockerEngine, image: Image, tmp_path: Path) -> None:
    """The kubelet stops a gateway or preview pod (a grant cancelled, a deadline passed, a node
    drained) with SIGTERM to its container's PID 1, and SIGKILL only 30 s later. One that comes
    while Python starts, before wingman handles SIGTERM, must end the container at once, not
    be lost: the kernel drops a signal PID 1 has no handler for, so the Jobs' command starts
    wingman under the image's tini, which forwards it."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SLOW_START)
    # wingman itself as PID 1 (what the Jobs ran before): the SIGTERM is dropped
    bare = f"wingman-sigterm-bare-{uuid.uuid4().hex[:8]}"
    try:
        _start_slowly(engine, image, bare, ["wingman", "gateway"], hook)
        engine.docker("kill", "--signal", "TERM", bare)
        time.sleep(3)
        state = json.loads(engine.docker("inspect", bare).stdout)[0]["State"]
        assert state["Running"], state
    finally:
        engine.docker("rm", "--force", bare, check=False)
    for command in (_command(_gateway_pod_spec(tmp_path)), _command(_preview_pod_spec())):
        assert command[:len(manifests.INIT)] == list(manifests.INIT), command
        name = f"wingman-sigterm-{command[-1]}-{uuid.uuid4().hex[:8]}"
        try:
            _start_slowly(engine, image, name, command, hook)
            sent = time.monotonic()
            engine.docker("kill", "--signal", "TERM", name)
            try:
                waited = engine.docker("wait", name, timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{command} still ran 20 s after a SIGTERM during Python's start: "
                            "its PID 1 dropped the signal")
            assert waited.stdout.strip() == "143", (command, waited.stdout)  # 128 + SIGTERM
            assert time.monotonic() - sent < 10, command
        finally:
            engine.docker("rm", "--force", name, check=False)
