"""Every series the operator and the chat component export is documented in the runbook, with
its type and labels."""

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


def _kinds_and_labels(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """Each series' type and label names, as declared (a labelled series with no child yet
    exports no sample, so the labels are read from its collector)."""
    out = {}
    for collector in registry._collector_to_names:
        kind = getattr(collector, "_type", "")
        labels = set(getattr(collector, "_labelnames", ()))
        series = getattr(collector, "_name", "")
        if series:
            out[series + ("_total" if kind == "counter" else "")] = (kind, labels)
    assert out and len(out) == len(list(registry.collect())), "collectors not understood"
    return out


def test_the_runbooks_metrics_table_gives_each_series_type_and_labels() -> None:
    declared = _kinds_and_labels(Metrics().registry) | _kinds_and_labels(ChatMetrics().registry)
    section = RUNBOOK.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(wingman_[a-z_]+)` \| (\w+) \| ([^|]*) \|", section, re.M)
    assert len(rows) == len(declared)
    wrong = {name: ((kind, sorted(re.findall(r"`(\w+)`", labels))),
                    (declared[name][0], sorted(declared[name][1])))
             for name, kind, labels in rows
             if (kind, set(re.findall(r"`(\w+)`", labels))) != declared[name]}
    assert not wrong, "runbook (type, labels) != code (type, labels)"
