"""Deterministic names of what the operator creates for a grant."""

from __future__ import annotations

import pytest

from wingman.model import names


@pytest.mark.parametrize("grant", ["g", "a" * 54, "a" * 55, "b" * 63, "x-" * 31 + "y"])
def test_job_names_are_deterministic_distinct_and_leave_room_for_the_pod_suffix(
        grant: str) -> None:
    job = names.job_name(grant)
    assert job == names.job_name(grant) and job.endswith("-gw")
    # the Job controller names pods <job>-<5 characters> only while <job>- fits in 58
    assert len(job) <= 57
    assert job == f"{grant}-gw" or len(grant) > 54


def test_long_grant_names_that_share_a_prefix_get_different_jobs() -> None:
    assert names.job_name("a" * 60 + "x") != names.job_name("a" * 60 + "y")


def test_a_grant_keeps_the_job_name_it_was_issued_with() -> None:
    grant = {"metadata": {"name": "b" * 59}}
    assert names.grant_job_name(grant) == names.job_name("b" * 59)
    issued = {**grant, "status": {"jobName": "b" * 59 + "-gw"}}
    assert names.grant_job_name(issued) == "b" * 59 + "-gw"
