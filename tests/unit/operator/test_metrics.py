"""Every series the operator and the chat component export is documented in the runbook."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from wingman.chat.metrics import ChatMetrics
from wingman.operator.metrics import Metrics

RUNBOOK = Path(__file__).resolve().parents[3] / "docs" / "runbook.md"


def _exported(registry: CollectorRegistry) -> set[str]:
    return {metric.name + ("_total" if metric.type == "counter" else "")
            for metric in registry.collect()}


def test_every_exported_series_has_a_row_in_the_runbooks_metrics_table() -> None:
    exported = _exported(Metrics().registry) | _exported(ChatMetrics().registry)
    section = RUNBOOK.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(wingman_[a-z_]+)` \|", section, re.M))
    assert exported, "the registries export nothing"
    assert exported - documented == set(), "exported but not in docs/runbook.md's Metrics table"
    assert documented - exported == set(), "documented but no longer exported"
