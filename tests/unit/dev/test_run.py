"""`wingman dev run`'s choice of node: the real one by default, the harness on request."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from wingman.dev import run
from wingman.errors import ClusterError, ConfigError


def test_the_real_node_is_the_default_and_the_harness_is_chosen_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(run.NODE_ENV, raising=False)
    assert run.node_mode() == "real"
    monkeypatch.setenv(run.NODE_ENV, " harness ")
    assert run.node_mode() == "harness"


def test_an_unknown_node_mode_says_which_variable_and_the_choices(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(run.NODE_ENV, "kind")
    with pytest.raises(ConfigError) as err:
        run.node_mode()
    assert "WINGMAN_DEV_NODE='kind'" in err.value.message
    assert "real" in err.value.message and "harness" in err.value.message


def test_a_configured_cluster_is_the_first_kubeconfig_file_that_exists(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{config}")
    assert run.configured_kubeconfig() == config


@pytest.mark.parametrize("kind", ["directory", "missing"])
def test_kubeconfig_naming_no_file_is_refused_with_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str) -> None:
    name = tmp_path if kind == "directory" else tmp_path / "missing"
    monkeypatch.setenv("KUBECONFIG", str(name))
    with pytest.raises(ConfigError) as err:
        run.configured_kubeconfig()
    assert str(name) in err.value.message
    assert ("not a regular file" if kind == "directory" else "unset it") in err.value.message
    if kind == "missing":  # unset, ~/.kube/config is the cluster where there is one
        assert "~/.kube/config" in err.value.message


def _kubeconfig(path: Path, current: str | None) -> Path:
    config: dict[str, object] = {"apiVersion": "v1", "kind": "Config", "clusters": [],
                                 "contexts": [], "users": []}
    if current is not None:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_cluster_is_named_by_the_file_whose_current_context_kubectl_uses(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With several files in KUBECONFIG, kubectl uses the current-context of the first file
    that sets one (an empty one sets none): that file is the one `wingman dev run` names, not
    the first file that exists."""
    clusters = _kubeconfig(tmp_path / "clusters", None)
    empty = _kubeconfig(tmp_path / "empty-context", "")
    staging = _kubeconfig(tmp_path / "staging", "staging")
    prod = _kubeconfig(tmp_path / "prod", "prod")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{clusters}:{empty}:{staging}:{prod}")
    assert run.configured_kubeconfig() == clusters  # a cluster is configured
    assert run.current_context() == ("staging", staging)


def test_the_default_kubeconfig_holds_the_current_context_without_kubeconfig(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kube").mkdir()
    config = _kubeconfig(tmp_path / ".kube" / "config", "home")
    assert run.current_context() == ("home", config)


def test_kubeconfig_files_that_set_no_current_context_are_refused_with_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = _kubeconfig(tmp_path / "a", None)
    second = _kubeconfig(tmp_path / "b", "")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    with pytest.raises(ConfigError) as err:
        run.current_context()
    assert f"{first}:{second}" in err.value.message
    assert "kubectl config use-context" in err.value.message


def test_a_kubeconfig_that_is_not_yaml_is_named(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text("current-context: [\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    with pytest.raises(ConfigError) as err:
        run.current_context()
    assert f"cannot read the kubeconfig {broken}" in err.value.message


def test_dev_run_names_the_file_of_the_current_context(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """The message `wingman dev run` prints on a configured cluster names the file kubectl takes
    the current context from (here no API server answers, so it stops right after)."""
    clusters = _kubeconfig(tmp_path / "clusters", None)
    staging = tmp_path / "staging"
    staging.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "staging",
        "clusters": [{"name": "s", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "staging", "context": {"cluster": "s", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "x"}}]}))
    monkeypatch.setenv("KUBECONFIG", f"{clusters}:{staging}")
    with pytest.raises(ClusterError):
        run._run_on_configured_cluster()
    out = capsys.readouterr().out
    assert f"using the cluster configured in {staging} (its current-context staging)" in out


_POPEN = subprocess.Popen


class _Started:
    """What ``subprocess.Popen`` would have started as the operator: the environment it was
    given (anything else, ``helm template``, is started)."""

    env: ClassVar[dict[str, str]] = {}

    def __new__(cls, args: list[str], **kwargs: Any) -> Any:
        if args[1:] != ["-m", "wingman.cli", "operator"]:
            return _POPEN(args, **kwargs)
        return super().__new__(cls)

    def __init__(self, _args: list[str], *, env: dict[str, str]) -> None:
        _Started.env = env
        self.returncode = 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def poll(self) -> int:
        return 0


@pytest.mark.parametrize(("given", "listens"), [
    (None, "127.0.0.1"), ("", "127.0.0.1"), ("   ", "127.0.0.1"),
    ("0.0.0.0", "0.0.0.0")])  # noqa: S104
def test_the_local_operator_listens_on_this_machine_only_unless_told(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: str | None,
        listens: str) -> None:
    """A laptop's operator keeps its health and metrics off the networks the laptop is on,
    on the local control plane and on a configured cluster alike; ``WINGMAN_LISTEN_ADDRESS``
    still wins."""
    if given is None:
        monkeypatch.delenv("WINGMAN_LISTEN_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("WINGMAN_LISTEN_ADDRESS", given)
    env = run._operator_env(tmp_path / "kubeconfig", tmp_path / "audit.jsonl", "img:1")
    assert env["WINGMAN_LISTEN_ADDRESS"] == listens
    monkeypatch.setattr(subprocess, "Popen", _Started)
    assert run._run_operator_here(tmp_path, "{}", "kubectl", exit_after_start=False) == 0
    assert _Started.env["WINGMAN_LISTEN_ADDRESS"] == listens


def test_the_local_operator_knows_where_the_chart_binds_the_executor_and_what_it_grants(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Both ways dev run starts an operator here give it the gateway targets of the values it
    installs the chart with, the namespaces where the chart binds wingman-executor, and the
    rules of the Role bound there: its review panel then holds a command the executor would be
    refused, and lets through what the Role grants, as the chart's operator does."""
    from support.chart import find, render

    rendered = render("test")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r.get("rules") or []
             for r in find(rendered, "Role")}
    granted = {b["metadata"]["namespace"]: roles[(b["metadata"]["namespace"],
                                                   b["roleRef"]["name"])]
               for b in find(rendered, "RoleBinding")
               if any(s.get("name") == "wingman-executor" for s in b.get("subjects") or [])}
    assert set(granted) == {"apps"} and granted["apps"]
    for name in run.GATEWAY_VARIABLES:  # the chart's say wins
        monkeypatch.setenv(name, '["elsewhere"]')
    monkeypatch.setattr(subprocess, "Popen", _Started)
    assert run._run_operator_here(tmp_path, "{}", "kubectl", exit_after_start=False) == 0
    for env in (run._operator_env(tmp_path / "kubeconfig", tmp_path / "audit.jsonl", "img:1"),
                _Started.env):
        assert set(json.loads(env["WINGMAN_GATEWAY_TARGETS"])) == set(granted)
        assert json.loads(env["WINGMAN_GATEWAY_TARGET_RULES"]) == granted
    values = tmp_path / "values.yaml"
    values.write_text("gateway: {}\n")
    # no targets: the executor is bound nowhere, and no rule grants anything
    assert run.gateway_env(values) == {"WINGMAN_GATEWAY_TARGETS": "[]",
                                       "WINGMAN_GATEWAY_TARGET_RULES": "{}"}
    values.write_text("gateway: [\n")
    with pytest.raises(ConfigError, match=r"helm template of .* failed"):
        run.gateway_env(values)
