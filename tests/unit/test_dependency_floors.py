"""The declared dependency floors are real: the tests pass with the lowest direct versions.

uv resolves pyproject.toml (with the test extras) with ``--resolution lowest-direct``: every
direct dependency at its floor, theirs at the newest they allow, as a user installing into an
old environment could get. The wheels go into a fresh virtual environment (uv's cache makes
this a few seconds after the first run), and the tests that depend most on the SDKs' and
libraries' APIs run there: the LLM voters (openai, anthropic, httpx), the review panel, the
capability tokens and keys (PyJWT, cryptography), the MCP server (the mcp SDK) and the API
client (kubernetes, urllib3). A floor that is too low fails here, instead of voters silently
abstaining or every API request failing in production.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The LLM voters and the panel (test_llm.py: the rest of tests/unit/review, the commands'
#: parsing, the built-in voters, the consensus and the policies, calls no SDK), the capability
#: tokens, the MCP server (its SDK, and every tool call through ``wingman.kube`` to the API
#: server), and the API client against the real API server (the kubernetes client's ApiClient
#: and urllib3's pools, which ``wingman.kube`` reaches into).
SUITES = ("tests/unit/review/test_llm.py", "tests/unit/capability", "tests/unit/mcp",
          "tests/unit/test_kube.py", "tests/integration/test_kube.py")
#: Left out of the run at the floors: the MCP server's own connection timers (the headers'
#: and the body's deadlines, the stalled-writer drop, the idle clock of a busy connection, the
#: refusals' log window). Each talks raw HTTP/1.1 over a socket to the server's uvicorn
#: protocol (``wingman.mcp.server._bounded_protocol``) and asserts on what that protocol, the
#: bearer check or the body deadline (the project's own code) does; the SDK only answers a
#: bare GET with some 4xx they do not look into, and uvicorn is no direct dependency (it is
#: resolved as in the project's environment). No floor can change what they check, and they
#: wait out the timers: about two minutes of the run.
TIMER_TESTS = tuple(f"tests/unit/mcp/test_server.py::{name}" for name in (
    "test_a_client_that_never_reads_its_answers_is_dropped",
    "test_a_connection_that_keeps_sending_requests_is_not_closed_as_idle",
    "test_a_request_whose_body_trickles_in_is_answered_and_closed",
    "test_connections_refused_after_the_first_record_are_counted_in_a_later_one",
    "test_a_refused_request_whose_body_trickles_in_is_closed",
    "test_a_connection_whose_request_headers_never_end_is_closed"))


def _run(*argv: str | Path, timeout: float = 600, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


@pytest.fixture(scope="module")
def floors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with every direct dependency at its declared floor."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.fail(f"{uv} is missing: run 'bash .ci/setup' (it installs the test extras)")
    work = tmp_path_factory.mktemp("floors")
    pins = work / "floors.txt"
    done = _run(uv, "pip", "compile", REPO / "pyproject.toml", "--extra", "test",
                "--resolution", "lowest-direct", "--python-version", "3.11",
                "--only-binary", ":all:", "--quiet", "-o", pins)
    assert done.returncode == 0, (
        "cannot resolve the dependency floors (this test needs the package index): "
        + done.stderr[-3000:])
    venv = work / "venv"
    done = _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _run(uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python",
                "--only-binary", ":all:", "-r", pins)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_the_floors_are_what_got_installed(floors: Path) -> None:
    import tomllib

    from packaging.requirements import Requirement

    declared = {}
    for line in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if lows:
            declared[req.name.lower().replace("_", "-")] = lows[0]
    script = ("import importlib.metadata as m, json, sys; "
              "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    done = _run(floors / "bin" / "python", "-c", script, *declared)
    assert done.returncode == 0, done.stderr
    import json

    installed = json.loads(done.stdout)
    for name in ("openai", "anthropic", "httpx", "pyjwt", "cryptography", "kopf", "mcp",
                 "kubernetes"):
        got, floor = installed[name], declared[name]
        assert got.split(".")[: len(floor.split("."))] == floor.split("."), (name, got, floor)


def test_the_sdk_dependent_tests_pass_at_the_floors(floors: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO / 'tests'}"}
    env.pop("VIRTUAL_ENV", None)
    done = _run(floors / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "-x", *SUITES, *(f"--deselect={t}" for t in TIMER_TESTS), env=env,
                timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
