"""`wingman dev run`'s choice of node: the real one by default, the harness on request."""

from __future__ import annotations

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
