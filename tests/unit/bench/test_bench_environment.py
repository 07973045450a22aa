"""The operator bench's figures do not depend on the caller's shell: WINGMAN_* variables there
are ignored and named, settings come only through --operator-env
(tests/bench/bench_operator.py)."""

from __future__ import annotations

import pytest

from bench import bench_operator as bench


def test_wingman_variables_of_the_callers_environment_are_ignored_but_the_tools_own() -> None:
    environ = {"WINGMAN_API_CONCURRENCY": "16", "WINGMAN_LLM_API_KEY": "sk-secret",
               "WINGMAN_CACHE": "/cache", "WINGMAN_TOOLS_DIR": "/tools", "PATH": "/bin",
               "MY_WINGMAN_X": "1"}
    assert bench.ignored_environment(environ) == ["WINGMAN_API_CONCURRENCY",
                                                  "WINGMAN_LLM_API_KEY"]


def test_the_ignored_variables_are_named_never_their_values(
        capsys: pytest.CaptureFixture[str]) -> None:
    bench.say_ignored({"WINGMAN_API_CONCURRENCY": "16", "WINGMAN_LLM_API_KEY": "sk-secret"})
    err = capsys.readouterr().err
    assert "ignoring WINGMAN_API_CONCURRENCY, WINGMAN_LLM_API_KEY" in err
    assert "--operator-env NAME=VALUE" in err
    assert "sk-secret" not in err and "16" not in err.split("]", 1)[1]
    bench.say_ignored({"WINGMAN_CACHE": "/cache", "HOME": "/root"})
    assert capsys.readouterr().err == ""
