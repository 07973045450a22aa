"""wingman.audit.postgres without a server: which server versions the trail refuses."""

from __future__ import annotations

import pytest

from wingman.audit.postgres import MIN_SERVER_VERSION, version_refusal


@pytest.mark.parametrize("found", [110000, 110022, 150004, 170000, "150004", " 160002\n"])
def test_postgresql_11_and_newer_are_accepted(found: object) -> None:
    assert version_refusal(found) is None


@pytest.mark.parametrize(("found", "shown"), [
    (100023, "PostgreSQL 10.23 (server_version_num 100023)"),
    (90624, "PostgreSQL 9.6.24 (server_version_num 90624)"),
    (80417, "PostgreSQL 8.4.17 (server_version_num 80417)"),
    ("100005", "PostgreSQL 10.5 (server_version_num 100005)"),
    (109999, "PostgreSQL 10.9999"),
])
def test_an_older_server_is_refused_naming_its_version_and_the_minimum(
        found: object, shown: str) -> None:
    refusal = version_refusal(found)
    assert refusal is not None and shown in refusal
    assert "needs PostgreSQL 11 or newer (server_version_num 110000)" in refusal
    assert "upgrade the server" in refusal


@pytest.mark.parametrize("found", [0, -1, None, "", "15.4", "11beta1", "abc", True, 11.0,
                                   "1" * 500, "1" * 5000, 10**9, "\u00b2", "\u0661\u0661"])
def test_a_version_that_cannot_be_read_is_refused(found: object) -> None:
    """libpq says 0 when it could not read the server's version: not taken for a new one."""
    refusal = version_refusal(found)
    assert refusal is not None and "could not be read" in refusal, refusal
    assert "needs PostgreSQL 11 or newer" in refusal and len(refusal) < 300


def test_the_minimum_is_postgresql_11() -> None:
    assert MIN_SERVER_VERSION == 110000
