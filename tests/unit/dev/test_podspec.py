"""wingman.dev.podspec: the pod specs Wingman ships, as the Docker-backed node runs them.

The inputs are the real ones: the Job the operator builds (manifests.gateway_job) and the
chart's rendered Deployment and helm test Pod. A security-context field the translation does
not know is refused, so a chart change it would silently drop fails here first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.chart import find, render
from wingman.dev import podspec
from wingman.operator import manifests
from wingman.settings import OperatorSettings


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "n", "uid": "u" * 36}, "spec": spec}


def _mounts(container: dict[str, Any]) -> list[podspec.Mount]:
    return [podspec.Mount(m["mountPath"], Path("/host") / m["name"], bool(m.get("readOnly")))
            for m in container.get("volumeMounts") or []]


def _config(spec: dict[str, Any], image_user: str = "65532:65532") -> dict[str, Any]:
    container = spec["containers"][0]
    return podspec.docker_run_config(_pod(spec), container, image="img:1",
                                     image_user=image_user, env={"A": "b"},
                                     mounts=_mounts(container), name="c")


def test_the_gateway_job_runs_locked_down(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("environment: test\n")
    job = manifests.gateway_job({"metadata": {"name": "g", "namespace": "n", "uid": "u"}},
                                OperatorSettings.from_env({"WINGMAN_POLICY_FILE": str(policy)}),
                                300)
    config = _config(job["spec"]["template"]["spec"])
    assert config["user"] == "65532:65532" and config["group_add"] == ["65532"]
    assert config["read_only"] is True and config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges"]
    assert config["entrypoint"] == ["/usr/bin/tini", "--", "wingman", "gateway"]
    assert config["command"] == []
    assert config["mem_limit"] == 256 * 1024**2
    assert config["volumes"]["/host/token"] == {"bind": "/var/run/wingman/token", "mode": "ro"}
    assert config["volumes"]["/host/tmp"] == {"bind": "/tmp", "mode": "rw"}
    assert config["network_mode"] == "host"


def test_the_charts_operator_and_test_pod_run_locked_down() -> None:
    objs = render("test")
    (deployment,) = find(objs, "Deployment", "wingman-operator")
    (test_pod,) = find(objs, "Pod", "wingman-verify-privileges")
    for spec, args in ((deployment["spec"]["template"]["spec"], ["wingman", "operator"]),
                       (test_pod["spec"], ["wingman", "verify-privileges"])):
        config = _config(spec)
        assert config["user"] == "65532:65532"
        assert config["read_only"] is True and config["cap_drop"] == ["ALL"]
        assert "no-new-privileges" in config["security_opt"]
        assert "entrypoint" not in config and config["command"][:2] == args


def test_unknown_security_fields_and_root_are_refused() -> None:
    spec = {"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]}
    with pytest.raises(podspec.PodSpecNotSupported, match="procMount"):
        _config(spec)
    root = {"securityContext": {"runAsNonRoot": True},
            "containers": [{"name": "c"}]}
    with pytest.raises(podspec.PodSpecNotSupported, match="root"):
        _config(root, image_user="0")
    for user in ("nobody", "\u0663", "\u00b2"):  # an Arabic-Indic three, a superscript two
        with pytest.raises(podspec.PodSpecNotSupported, match="not numeric"):
            _config(root, image_user=user)
    assert "user" not in _config(root, image_user="1000")


@pytest.mark.parametrize(("quantity", "size"), [("256Mi", 256 * 1024**2), ("1G", 10**9),
                                                ("1048576", 1048576), ("16Ki", 16384)])
def test_memory_quantities(quantity: str, size: int) -> None:
    assert podspec.memory_bytes(quantity) == size


def test_commands_expand_variables_the_kubernetes_way() -> None:
    assert podspec.expand("$(A)-$$(A)-$(B)", {"A": "x"}) == "x-$(A)-$(B)"
