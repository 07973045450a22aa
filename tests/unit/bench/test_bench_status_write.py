"""The status-write bench measures what it says: the attribution variant's CRD differs from the
real one only by its CEL rules, and the real variant writes what ``approvals.reviewed()``
returns for the TEST panel's votes (tests/bench/bench_status_write.py)."""

from __future__ import annotations

from typing import Any

import yaml

from bench import bench_status_write as bench
from support.chart import CRDS_DIR


def _rules(node: Any) -> int:
    if isinstance(node, dict):
        return ("x-kubernetes-validations" in node) + sum(_rules(v) for v in node.values())
    if isinstance(node, list):
        return sum(_rules(v) for v in node)
    return 0


def test_the_crd_without_cel_drops_every_rule_and_nothing_else() -> None:
    crd = yaml.safe_load((CRDS_DIR / "approvalrequests.wingman.dev.yaml").read_text())
    stripped = bench.without_cel(crd)
    assert _rules(crd) > 0 and _rules(stripped) == 0
    schema = stripped["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert spec["properties"]["commands"]["maxItems"] == 10  # the schema's own checks stay
    assert spec["properties"]["environment"]["pattern"] == "^[a-z][a-z0-9-]{0,30}$"
    assert stripped["metadata"] == crd["metadata"]


def test_the_real_write_is_the_reviewed_status_guarded_by_the_version_read() -> None:
    made = bench.approvals_sample()
    bodies = bench.patches(bench.test_policy())
    real = bodies["real"](made)
    assert real["metadata"] == {"resourceVersion": "1"}
    status = real["status"]
    assert status["phase"] == "AutoApproved"  # the TEST panel approves the bench's command
    assert [v["voter"] for v in status["consensus"]["votes"]] == [
        "destructive", "blast-radius", "allowlist", "prompt-injection"]
    assert {c["type"] for c in status["conditions"]} == {"Reviewed", "Approved", "Ready"}
    assert status["auditHead"].startswith("sha256:")
    smaller = bodies["no-votes"](made)["status"]["consensus"]
    assert "votes" not in smaller and "dissent" not in smaller
    assert smaller["outcome"] == status["consensus"]["outcome"]
    assert bodies["phase-only"](made)["status"] == {"phase": "AutoApproved",
                                                    "auditHead": status["auditHead"]}
    assert bodies["noop"](made) == {"status": {"phase": "Reviewing"}}


def test_the_atomic_conditions_copy_changes_the_conditions_list_type_only() -> None:
    crd = yaml.safe_load((CRDS_DIR / "approvalrequests.wingman.dev.yaml").read_text())
    changed = bench.atomic_conditions(crd)
    status = changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["conditions"]["x-kubernetes-list-type"] == "atomic"
    assert "x-kubernetes-list-map-keys" not in status["properties"]["conditions"]
    original = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert original["properties"]["conditions"]["x-kubernetes-list-type"] == "map"  # a copy
    status["properties"].pop("conditions")
    original["properties"].pop("conditions")
    assert changed == crd  # nothing else differs
