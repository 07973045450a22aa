"""The tree is lint-clean and type-checks strictly, package and tests alike.

CI runs only the test command (``make test``), never ``make lint``: without this file a ruff
finding or a type error (a test fake that no longer matches what it stands in for, a module
attribute that moved) would reach the main branch unseen. Both tools run as ``make lint``
runs them, from this checkout's virtualenv and its ``pyproject.toml`` (mypy's ``files``,
``mypy_path`` and ``strict``), their caches in pytest's temporary directory, never in the tree.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: What ``make lint`` checks: the package and every test, support module and bench.
CHECKED = (REPO / "operator" / "wingman", REPO / "tests")
#: A cold mypy run over the whole tree takes about a minute on two shared cores.
TOOL_TIMEOUT_SECONDS = 900
#: Replaced by the run's cache directory in each row's arguments.
CACHE = "{cache}"


@pytest.mark.parametrize(("tool", "args", "cache_variable"), [
    ("ruff", ["check", "--cache-dir", CACHE, "operator", "tests"], "RUFF_CACHE_DIR"),
    ("mypy", ["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", CACHE],
     "MYPY_CACHE_DIR"),
], ids=["ruff", "mypy"])
def test_the_linters_find_nothing(tool: str, args: list[str], cache_variable: str,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = str(tmp_path_factory.mktemp(f"{tool}-cache"))
    argv = [sys.executable, "-m", tool, *(cache if a == CACHE else a for a in args)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=TOOL_TIMEOUT_SECONDS, env={**os.environ, cache_variable: cache})
    findings = f"{tool} {' '.join(argv[3:])} (exit {done.returncode}):\n{done.stdout}{done.stderr}"
    assert done.returncode == 0, findings
    if tool == "mypy":
        # a configuration that checked only part of the tree would pass as well: every file
        # of the package and the tests must have been read
        checked = re.search(r"^Success: no issues found in (\d+) source files$", done.stdout,
                            re.MULTILINE)
        assert checked is not None, findings
        expected = sum(1 for top in CHECKED for _ in top.rglob("*.py"))
        assert int(checked.group(1)) >= expected, findings
