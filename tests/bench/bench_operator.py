"""Operator figures at scale, beside a no-op kopf operator on the same control plane.

    .venv/bin/python tests/bench/bench_operator.py [--count 1000] [--workers 8]

Creates COUNT ApprovalRequests (as the worker) and COUNT ExecutionGrants (as the approver)
in a fresh Helm release, first with the real operator, then, in a second release, with a
no-op kopf operator whose handlers do the least comparable work (write a status field; create
a suspended Job). Prints throughput, latency percentiles (create → consensus written; grant →
Job created) and each operator's peak RSS, and the ratios real / no-op.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kubernetes import client, watch

from support.chart import APPROVER, WORKER, approver_groups, installed, worker_groups
from support.operator import OperatorProcess
from wingman.dev.cluster import LocalCluster

GROUP, VERSION = "wingman.dev", "v1alpha1"
COMMAND = "kubectl rollout restart deployment/web -n apps"

NOOP = textwrap.dedent('''
    """The framework's floor: the same watches, the least work per object."""
    import kopf
    from kubernetes import client, config

    config.load_kube_config()
    batch = client.BatchV1Api()

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="noop.wingman.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="noop.wingman.dev", key="last")
        settings.posting.level = 40

    @kopf.on.create("wingman.dev", "v1alpha1", "approvalrequests")
    def review(patch, **_):
        patch.status["phase"] = "Reviewing"

    @kopf.on.create("wingman.dev", "v1alpha1", "executiongrants")
    def grant(name, namespace, uid, **_):
        batch.create_namespaced_job(namespace, {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name + "-gw", "labels": {"wingman.dev/grant": name},
                         "ownerReferences": [{"apiVersion": "wingman.dev/v1alpha1",
                                              "kind": "ExecutionGrant", "name": name,
                                              "uid": uid}]},
            "spec": {"suspend": True, "template": {"spec": {
                "restartPolicy": "Never", "serviceAccountName": "default",
                "containers": [{"name": "x", "image": "example.test/noop:1"}]}}}})
''')


class Recorder:
    """Client-side timestamps: when each object was created and when its effect appeared."""

    def __init__(self) -> None:
        self.created: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.lock = threading.Lock()

    def latencies(self) -> list[float]:
        return sorted(self.done[k] - self.created[k] for k in self.done if k in self.created)


def _watch(api: client.ApiClient, ns: str, stop: threading.Event, recorder: Recorder,
           lister: Callable[..., Any], done: Callable[[dict[str, Any]], str | None]) -> None:
    w = watch.Watch()
    while not stop.is_set():
        for event in w.stream(lister, namespace=ns, timeout_seconds=2, **(
                {"group": GROUP, "version": VERSION, "plural": "approvalrequests"}
                if lister.__name__ == "list_namespaced_custom_object" else {})):
            obj = event["object"]
            obj = obj if isinstance(obj, dict) else api.sanitize_for_serialization(obj)
            key = done(obj)
            if key:
                with recorder.lock:
                    recorder.done.setdefault(key, time.monotonic())
            if stop.is_set():
                break


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


def run_round(cluster: LocalCluster, label: str, count: int, workers: int,
              start_operator: Callable[[str], Callable[[], int]],
              consensus_done: Callable[[dict[str, Any]], bool]) -> dict[str, float]:
    ns = f"bench-{label}-{int(time.time())}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values={"operator.replicas": 0}):
        peak_rss = start_operator(ns)
        worker_api = cluster.api_client(WORKER, worker_groups("test"))
        approver_api = cluster.api_client(APPROVER, approver_groups("test"))
        admin = cluster.api_client()
        reviews, jobs = Recorder(), Recorder()
        stop = threading.Event()
        custom = client.CustomObjectsApi(admin)
        batch = client.BatchV1Api(admin)
        t1 = threading.Thread(target=_watch, daemon=True, args=(
            admin, ns, stop, reviews, custom.list_namespaced_custom_object,
            lambda o: o["metadata"]["name"] if consensus_done(o) else None))
        t2 = threading.Thread(target=_watch, daemon=True, args=(
            admin, ns, stop, jobs, batch.list_namespaced_job,
            lambda o: (o["metadata"].get("labels") or {}).get("wingman.dev/grant")))
        t1.start()
        t2.start()

        def create_request(i: int) -> None:
            name = f"r{i:05d}"
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApprovalRequest",
                    "metadata": {"name": name},
                    "spec": {"requester": WORKER, "environment": "test",
                             "instruction": "bench", "commands": [COMMAND]}}
            with reviews.lock:
                reviews.created[name] = time.monotonic()
            client.CustomObjectsApi(worker_api).create_namespaced_custom_object(
                GROUP, VERSION, ns, "approvalrequests", body)

        def create_grant(i: int) -> None:
            name = f"g{i:05d}"
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ExecutionGrant",
                    "metadata": {"name": name},
                    "spec": {"approvalRef": {"name": f"r{i:05d}"}, "command": COMMAND}}
            with jobs.lock:
                jobs.created[name] = time.monotonic()
            client.CustomObjectsApi(approver_api).create_namespaced_custom_object(
                GROUP, VERSION, ns, "executiongrants", body)

        def drain(recorder: Recorder, timeout: float) -> float:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and len(recorder.done) < count:
                time.sleep(0.2)
            return max(recorder.done.values(), default=time.monotonic())

        start = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(create_request, range(count)))
        end_reviews = drain(reviews, 600)
        review_span = end_reviews - start
        gstart = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(create_grant, range(count)))
        end_jobs = drain(jobs, 600)
        grant_span = end_jobs - gstart
        stop.set()
        rss = peak_rss()
        rl, jl = reviews.latencies(), jobs.latencies()
        return {"reviews": len(rl), "review_rate": len(rl) / review_span if review_span else 0,
                "review_p50": _pct(rl, 50), "review_p95": _pct(rl, 95),
                "review_p99": _pct(rl, 99), "jobs": len(jl),
                "grant_rate": len(jl) / grant_span if grant_span else 0,
                "grant_p50": _pct(jl, 50), "grant_p95": _pct(jl, 95), "grant_p99": _pct(jl, 99),
                "peak_rss_mib": rss / 1024}


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wingman-bench-"))
    with LocalCluster.start(work / "cluster") as cluster:
        cluster.apply_crds(Path(__file__).resolve().parents[2] / "crds")
        procs: list[Any] = []

        def real(ns: str) -> Callable[[], int]:
            op = OperatorProcess(cluster, ns, work / "real", extra_env={
                "WINGMAN_LOG_FORMAT": "json", "WINGMAN_EXPIRY_INTERVAL_SECONDS": "60"})
            op.start()
            procs.append(op)
            return lambda: _peak_rss_kib(op.proc.pid) if op.proc else 0

        def noop(ns: str) -> Callable[[], int]:
            script = work / "noop.py"
            script.write_text(NOOP)
            token = cluster.sa_token(ns, "wingman-operator", expiration_seconds=7200)
            kubeconfig = cluster.token_kubeconfig(token, "noop")
            log = (work / "noop.log").open("wb")
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "kopf"), "run", "--standalone", "-n", ns,
                 str(script)], env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin"},
                stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            time.sleep(3)
            return lambda: _peak_rss_kib(proc.pid)

        figures = {}
        try:
            figures["wingman"] = run_round(
                cluster, "real", args.count, args.workers, real,
                lambda o: bool((o.get("status") or {}).get("consensus")))
            for p in procs:
                p.stop() if isinstance(p, OperatorProcess) else p.terminate()
            figures["noop"] = run_round(
                cluster, "noop", args.count, args.workers, noop,
                lambda o: (o.get("status") or {}).get("phase") == "Reviewing")
        finally:
            for p in procs:
                p.stop() if isinstance(p, OperatorProcess) else p.terminate()
    real_f, floor = figures["wingman"], figures["noop"]
    print(f"{'figure':<22}{'wingman':>12}{'no-op kopf':>14}{'ratio':>10}")
    for key in real_f:
        ratio = real_f[key] / floor[key] if floor.get(key) else float("nan")
        print(f"{key:<22}{real_f[key]:>12.1f}{floor[key]:>14.1f}{ratio:>10.2f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
