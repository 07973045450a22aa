"""The package's architecture holds: import contracts, no cycles, the dev harness kept out.

The contracts themselves live in pyproject.toml (``[tool.importlinter]``) so that
``lint-imports`` and this test read the same ones.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import grimp
import pytest

import wingman

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(wingman.__file__).resolve().parent


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_only_the_cli_dev_command_imports_the_dev_harness() -> None:
    graph = grimp.build_graph("wingman")
    dev = {m for m in graph.modules if m == "wingman.dev" or m.startswith("wingman.dev.")}
    importers = {importer for module in dev
                 for importer in graph.find_modules_that_directly_import(module)} - dev
    assert importers <= {"wingman.cli.main"}, sorted(importers)


def test_every_subpackage_says_what_it_owns_and_may_import() -> None:
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if init.parent == PACKAGE:
            continue
        doc = [*init.read_text().split('"""'), "", ""][1]
        rel = init.parent.relative_to(PACKAGE)
        assert doc.strip(), f"wingman/{rel}/__init__.py has no docstring"
        assert "import" in doc.lower(), f"wingman/{rel} does not say what it may import"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("*.whl")
    return built


def test_the_distribution_does_not_carry_the_dev_harness(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "wingman/cli/main.py" in names and "wingman/gateway/run.py" in names
    assert not [n for n in names if n.startswith("wingman/dev/")]
