"""Failover and outage figures on a real control plane of its own, beside their targets.

    .venv/bin/python tests/bench/bench_faults.py [MODE ...] [--outage-seconds 60]
        [--etcd-seconds 30] [--requests 100] [--repeat 1]

Modes (all by default):

- ``failover``: two replicas and a flow of requests and grants; the active replica is SIGKILLed
  mid-flow, then (a second round) SIGTERMed. Prints kill → the standby ready (holding the
  lease), kill → its first action (audit record) and kill → everything settled.
- ``restart``: one replica SIGKILLed mid-flow and started again, as the same pod (a container
  restart) and as a new pod; kill → ready and kill → first review.
- ``outage``: ``--requests`` requests (and 20 grants) in flight, the API server SIGKILLed for
  ``--outage-seconds`` then started again; seconds from its return to the last request
  reviewed and the last grant's Job released.
- ``etcd``: the same with etcd frozen (SIGSTOP/SIGCONT) for ``--etcd-seconds``.

Target (issue 16): each figure ≤ 15 s (kill → flow settled has none); a ``MISS`` line names each
figure over it. Every round also checks that nothing was lost or done twice
(``tests/support/faults.py``) and prints what was wrong if anything was.

Exit codes, for a job that runs the bench: 0 every figure met its target and nothing was wrong;
2 a figure missed its target (and nothing was wrong); 1 something was lost or done twice (a
``PROBLEM`` line), or the bench failed (an error, with its traceback).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support import faults
from support.chart import installed
from wingman.dev.cluster import LocalCluster

TARGET = 15.0
MODES = ("failover", "restart", "outage", "etcd")
#: The exit code when a figure missed its target (1: a problem or an error).
MISSED = 2


def _round(cluster: LocalCluster, label: str, run: Callable[[str, Path], Any],
           work: Path) -> Any:
    ns = f"bf-{label}-{int(time.time()) % 100000}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0}):
        return run(ns, work / ns)


def _line(figure: str, value: float) -> str:
    verdict = "ok" if value <= TARGET else "ABOVE TARGET"
    return f"{figure:<52}{value:>8.1f} s   (target ≤ {TARGET:.0f} s: {verdict})"


def judged(result: faults.Takeover | faults.Outage) -> list[tuple[str, float]]:
    """A round's figures that have the target, (figure, seconds), in the order printed."""
    if isinstance(result, faults.Takeover):
        return [("kill -> acting replica ready", result.ready_after),
                ("kill -> first action (audit record)", result.first_action_after)]
    return [("return -> last request reviewed", result.last_request_after),
            ("return -> last grant's Job released", result.last_grant_after)]


def missed(label: str, result: faults.Takeover | faults.Outage) -> list[str]:
    """The figures of round ``label`` over the target, each as its MISS line says it."""
    return [f"{label}: {figure} {value:.1f} s (target ≤ {TARGET:.0f} s)"
            for figure, value in judged(result) if value > TARGET]


def exit_code(misses: list[str], problems: bool) -> int:
    """1 when anything was lost or done twice, else :data:`MISSED` when a figure missed its
    target, else 0."""
    return 1 if problems else MISSED if misses else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="*", metavar="MODE",
                        help=f"any of {', '.join(MODES)} (default: all)")
    parser.add_argument("--outage-seconds", type=float, default=60.0)
    parser.add_argument("--etcd-seconds", type=float, default=30.0)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    modes = args.modes or list(MODES)
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode {', '.join(unknown)}: choose from {', '.join(MODES)}")
    work = Path(tempfile.mkdtemp(prefix="wingman-bench-faults-"))
    figures: list[dict[str, Any]] = []
    misses: list[str] = []
    failed = False
    with LocalCluster.start(work / "cluster") as cluster:
        cluster.apply_crds(Path(__file__).resolve().parents[2] / "crds")
        for _ in range(args.repeat):
            rounds: list[tuple[str, Callable[[str, Path], Any]]] = []
            if "failover" in modes:
                rounds += [(how, functools.partial(faults.failover, cluster, how=how))
                           for how in ("SIGKILL", "SIGTERM")]
            if "restart" in modes:
                rounds += [("restart" if same else "replace",
                            functools.partial(faults.restart, cluster, same_identity=same))
                           for same in (True, False)]
            if "outage" in modes:
                rounds.append(("apiserver", lambda ns, wd: faults.outage(
                    cluster, ns, wd, "kube-apiserver", seconds=args.outage_seconds,
                    requests=args.requests)))
            if "etcd" in modes:
                rounds.append(("etcd", lambda ns, wd: faults.outage(
                    cluster, ns, wd, "etcd", seconds=args.etcd_seconds,
                    requests=args.requests)))
            for label, run in rounds:
                result = _round(cluster, label.lower().replace("_", "-"), run, work)
                figures.append({"round": label, **result.__dict__})
                print(f"\n== {label}")
                if isinstance(result, faults.Takeover):
                    what = {"SIGKILL": "active replica SIGKILLed",
                            "SIGTERM": "active replica SIGTERMed",
                            "restart": "single replica SIGKILLed, same pod",
                            "replacement": "single replica SIGKILLed, new pod"}[result.how]
                    print(f"{what}; {result.requests} requests, {result.grants} grants")
                else:
                    print(f"{result.component} out for {result.seconds:.0f} s; "
                          f"{result.requests} requests, {result.grants} grants in flight")
                for figure, value in judged(result):
                    print(_line(figure, value))
                if isinstance(result, faults.Takeover):
                    print(f"{'kill -> flow settled (flow ran on after the kill)':<52}"
                          f"{result.settled_after:>8.1f} s")
                for miss in missed(label, result):
                    misses.append(miss)
                    print(f"  MISS  {miss}")
                for problem in result.problems:
                    failed = True
                    print(f"  PROBLEM: {problem}")
                if not result.problems:
                    print("  nothing lost, nothing done twice, audit verifies")
    print(json.dumps(figures))
    return exit_code(misses, failed)


if __name__ == "__main__":
    sys.exit(main())
