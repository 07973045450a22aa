"""The bounds the client, the command line, the MCP server and chat check before any call
are the CRDs' own (crds/ and the chart's copy): they cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from wingman import scope
from wingman.client import api
from wingman.model import limits

REPO = Path(__file__).resolve().parents[3]
CRD_DIRS = [REPO / "crds", REPO / "charts" / "wingman" / "crds"]


def _spec(directory: Path, plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((directory / f"{plural}.wingman.dev.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


@pytest.mark.parametrize("directory", CRD_DIRS, ids=["crds", "chart"])
def test_the_limits_are_the_crds_own(directory: Path) -> None:
    request = _spec(directory, "approvalrequests")["properties"]
    grant = _spec(directory, "executiongrants")["properties"]
    assert limits.ENVIRONMENT == request["environment"]["maxLength"]
    assert limits.INSTRUCTION == request["instruction"]["maxLength"]
    assert limits.JUSTIFICATION == request["justification"]["maxLength"]
    assert limits.COMMANDS == request["commands"]["maxItems"]
    assert limits.COMMAND == request["commands"]["items"]["maxLength"]
    assert limits.COMMAND == grant["command"]["maxLength"]
    rollbacks = request["rollbacks"]
    assert limits.ROLLBACKS == rollbacks["maxItems"]
    assert limits.ROLLBACK == rollbacks["items"]["properties"]["rollback"]["maxLength"]
    assert limits.COMMAND == rollbacks["items"]["properties"]["command"]["maxLength"]
    source = request["source"]["properties"]
    assert dict(limits.SOURCE) == {k: source[k]["maxLength"] for k in limits.SOURCE}
    assert {k for k, v in source.items() if "maxLength" in v} == set(limits.SOURCE)
    decisions = request["decisions"]
    assert limits.DECISIONS == decisions["maxItems"]
    assert limits.REASON == decisions["items"]["properties"]["reason"]["maxLength"]
    expires = request["expiresAfterSeconds"]
    assert limits.EXPIRES_AFTER_SECONDS == (expires["minimum"], expires["maximum"])
    ttl = grant["ttlSeconds"]
    assert limits.TTL_SECONDS == (ttl["minimum"], ttl["maximum"])


@pytest.mark.parametrize("directory", CRD_DIRS, ids=["crds", "chart"])
def test_the_environment_name_the_client_checks_is_the_crds_pattern(directory: Path) -> None:
    # the client refuses an environment name the API server would (its raw validation error
    # is no answer an agent can act on), saying "1 to ENVIRONMENT lowercase letters, digits
    # and '-', starting with a letter": the pattern, the length and what is said are one
    environment = _spec(directory, "approvalrequests")["properties"]["environment"]
    assert environment["pattern"] == limits.ENVIRONMENT_PATTERN
    assert api._ENVIRONMENT.pattern == limits.ENVIRONMENT_PATTERN
    crd = re.compile(environment["pattern"])
    for name in ("a", "test", "prd-2", "a-", "a" * limits.ENVIRONMENT):
        assert crd.fullmatch(name) and api._ENVIRONMENT.fullmatch(name), name
    for name in ("", "a" * (limits.ENVIRONMENT + 1), "2a", "-a", "Prd", "a_b", "a.b", "t\n"):
        assert not crd.fullmatch(name) and not api._ENVIRONMENT.fullmatch(name), name


def test_a_commands_bytes_are_bounded_as_the_scope_check_bounds_them() -> None:
    assert limits.COMMAND_BYTES == scope.MAX_COMMAND_BYTES
    assert limits.too_many_bytes("c", "a" * 4096, limits.COMMAND_BYTES, "x") is None
    assert limits.too_many_bytes("c", "é" * 2049, limits.COMMAND_BYTES, "fix") == (
        "c is 4,098 bytes of UTF-8 (2,049 characters); the limit is 4,096 bytes: fix")


def test_lengths_are_counted_in_code_points_as_the_api_server_counts_them() -> None:
    # maxLength counts Unicode code points: 1,000 of a 4-byte character fit in 1,000
    assert limits.too_long("the reason", "🙂" * limits.REASON, limits.REASON, "x") is None
    assert limits.too_long("the reason", "é" * (limits.REASON + 1), limits.REASON,
                           "shorten it") == ("the reason is 1,001 characters; the limit is "
                                             "1,000: shorten it")
    assert limits.out_of_range("--ttl-seconds", 29, limits.TTL_SECONDS, "fix") == (
        "--ttl-seconds is 29; it must be 30 to 3,600: fix")
    assert limits.out_of_range("--ttl-seconds", 30, limits.TTL_SECONDS, "fix") is None
