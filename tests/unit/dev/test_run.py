"""`wingman dev run`'s choice of node: the real one by default, the harness on request."""

from __future__ import annotations

from pathlib import Path

import pytest

from wingman.dev import run
from wingman.errors import ConfigError


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
