"""The image as built from the Dockerfile: every claim the Dockerfile, the chart and the
gateway Job make about it, checked by running it in the real Docker Engine.

User, read-only root filesystem, entrypoints, kubectl present and pinned, dependencies exactly
as locked, no installer and no development harness at run time, OCI labels.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

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
        engine: DockerEngine, image: Image) -> None:
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
        ("wingman", "gateway"),
    }
    help_text = run(engine, image, "wingman", "--help", options=locked)
    assert help_text.returncode == 0, help_text.stderr
    for program, sub in commands:
        assert program == "wingman"
        assert re.search(rf"\b{sub}\b", help_text.stdout), sub
        usage = run(engine, image, program, sub, "--help", options=locked)
        assert usage.returncode == 0, (sub, usage.stderr)
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
