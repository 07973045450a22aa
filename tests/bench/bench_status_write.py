"""What one ApprovalRequest status write costs the API server, by what the write carries.

    PYTHONPATH=operator:tests .venv/bin/python tests/bench/bench_status_write.py \
        [--count 500] [--threads 4] [--repeat 2] [--variants noop,real,no-cel,...]
        [--profile SECONDS] [--no-audit-log]

On one local control plane (the API server writing an audit log, as in bench_operator.py), for
each variant: a fresh namespace with the chart installed for TEST, COUNT ApprovalRequests like
bench_operator.py's (created by the worker), then one status write per request (a JSON merge
patch of ``approvalrequests/status`` as the operator's ServiceAccount, THREADS at a time).
Printed per variant: kube-apiserver and etcd CPU milliseconds per write (from
``/proc/<pid>/stat`` before and after the writes: robust to other load on the machine) and the
client's latency p50/p95 (not robust to it). The variants:

- ``noop``: the no-op operator's ``{"status": {"phase": "Reviewing"}}`` (bench_operator.py's
  floor);
- ``real``: what the operator writes when the panel has voted: ``approvals.reviewed()`` of the
  TEST policy's built-in panel's real Consensus, its ``auditHead`` and the resourceVersion
  precondition;
- ``no-cel``: ``real`` on a copy of the ApprovalRequest CRD without any
  ``x-kubernetes-validations`` (to attribute the cost; the CRD is restored afterwards);
- ``no-policies``: ``real`` with the release's ValidatingAdmissionPolicyBindings deleted;
- ``no-votes``: ``real`` without ``consensus.votes`` and ``consensus.dissent`` (size scaling);
- ``phase-only``: ``real``'s phase alone, with its precondition and ``auditHead``;
- ``noop-after-real``: ``noop``'s write to requests that already hold ``real``'s status (written
  first, not measured): what the stored object's size costs a write that carries little;
- ``atomic-conditions``: ``real`` on a copy of the CRD whose ``status.conditions`` is an atomic
  list instead of a map keyed by type (smaller managed fields; the API server then no longer
  refuses two conditions of one type: to attribute the cost, not to ship).

With ``--profile SECONDS``, kube-apiserver's CPU profile over the first SECONDS of each
variant's first run of writes is written to the work directory (kept), for ``go tool pprof
-top`` (``-diff_base`` the noop's); the profiler costs CPU: read no figure from such a run. Ctrl-C,
SIGTERM and SIGHUP stop everything the bench started (130).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kubernetes import client

from support.chart import (
    CRDS_DIR,
    WORKER,
    env_values,
    installed,
    sa_groups,
    sa_user,
    worker_groups,
)
from wingman.dev.cluster import LocalCluster
from wingman.dev.run import stopping_on_signals
from wingman.operator import approvals
from wingman.operator.context import _allowed
from wingman.review.consensus import Consensus, PanelConfig, run_panel
from wingman.review.panel import voters_from_config
from wingman.review.policy import EnvironmentPolicy
from wingman.scope import Allowlist

GROUP, VERSION, PLURAL = "wingman.dev", "v1alpha1", "approvalrequests"
COMMAND = "kubectl rollout restart deployment/web -n apps"  # bench_operator.py's
MERGE = "application/merge-patch+json"
TICK = os.sysconf("SC_CLK_TCK")
VARIANTS = ("noop", "real", "no-cel", "no-policies", "no-votes", "phase-only", "noop-after-real",
            "atomic-conditions")
#: the chart's settings of bench_operator.py that matter here (no operator runs)
VALUES = {"operator.replicas": 0}


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int | None) -> float:
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def request_body(name: str) -> dict[str, Any]:
    """bench_operator.py's request."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApprovalRequest",
            "metadata": {"name": name},
            "spec": {"requester": WORKER, "environment": "test", "instruction": "bench",
                     "commands": [COMMAND]}}


def test_policy() -> EnvironmentPolicy:
    """The TEST policy as the operator bench runs it: without previews (its requests carry
    none, and a policy that previews would hold a request without one from auto-approval)."""
    data = dict(env_values("test")["policy"])
    data["preview"] = {**(data.get("preview") or {}), "enabled": False}
    return EnvironmentPolicy.from_dict(data, environment="test")


def real_consensus(policy: EnvironmentPolicy, body: dict[str, Any]) -> Consensus:
    """The TEST panel's built-in voters on the bench's request, as the operator runs them."""
    allowlist = Allowlist.from_patterns(policy.allowlist)
    voters = voters_from_config(policy.panel.voters, secrets={},
                                is_allowed=lambda c: _allowed(allowlist, c))
    panel = PanelConfig(voters, policy.panel.threshold, policy.panel.quorum,
                        policy.panel.timeout_seconds)
    return asyncio.run(run_panel(panel, approvals.review_input(body)))


StatusOf = Callable[[dict[str, Any]], dict[str, Any]]


def patches(policy: EnvironmentPolicy) -> dict[str, StatusOf]:
    """The patch body of each variant, from the created object."""
    audit_head = "sha256:" + "ab" * 32

    def real(obj: dict[str, Any]) -> dict[str, Any]:
        consensus = real_consensus(policy, obj) if not cache else cache[0]
        cache[:] = [consensus]
        t = approvals.reviewed(obj, consensus, policy, dt.datetime.now(dt.UTC))
        assert t is not None
        return {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "status": {**t.status, "auditHead": audit_head}}
    cache: list[Consensus] = []

    def no_votes(obj: dict[str, Any]) -> dict[str, Any]:
        body = real(obj)
        body["status"]["consensus"] = {k: v for k, v in body["status"]["consensus"].items()
                                       if k not in ("votes", "dissent")}
        return body

    def phase_only(obj: dict[str, Any]) -> dict[str, Any]:
        body = real(obj)
        body["status"] = {"phase": body["status"]["phase"], "auditHead": audit_head}
        return body
    return {"noop": noop, "real": real, "no-cel": real, "no-policies": real,
            "no-votes": no_votes, "phase-only": phase_only, "noop-after-real": noop,
            "atomic-conditions": real}


def noop(_obj: dict[str, Any]) -> dict[str, Any]:
    return {"status": {"phase": "Reviewing"}}


# --------------------------------------------------------------------------- the CRD


def without_cel(crd: Any) -> Any:
    """``crd`` with every ``x-kubernetes-validations`` removed, at any depth."""
    if isinstance(crd, dict):
        return {k: without_cel(v) for k, v in crd.items() if k != "x-kubernetes-validations"}
    if isinstance(crd, list):
        return [without_cel(v) for v in crd]
    return crd


def _duplicate_accepted(cluster: LocalCluster, ns: str) -> bool:
    """Whether the API server accepts a request with a command twice (a CEL rule refuses it)."""
    body = request_body("cel-probe")
    body["spec"]["commands"] = [COMMAND, COMMAND]
    result = cluster.kubectl("create", "--dry-run=server", "-n", ns, "-f", "-",
                             input=json.dumps(body), check=False, user=WORKER,
                             groups=worker_groups("test"))
    return result.returncode == 0


def _serve(cluster: LocalCluster, path: Path, served: Callable[[], bool]) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    deadline = time.monotonic() + 60
    while not served():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the API server did not serve {path.name} within 60 s")
        time.sleep(0.5)


def atomic_conditions(crd: Any) -> Any:
    """``crd`` with ``status.conditions`` an atomic list (not a map keyed by type)."""
    changed = copy.deepcopy(crd)
    conds = changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"]["properties"]["conditions"]
    conds["x-kubernetes-list-type"] = "atomic"
    del conds["x-kubernetes-list-map-keys"]
    return changed


def _twins_accepted(cluster: LocalCluster, ns: str) -> bool:
    """Whether the API server accepts two conditions of one type (a map list refuses them)."""
    twins = {"status": {"conditions": [
        {"type": "Probe", "status": "True", "reason": "Probe", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}] * 2}}
    return cluster.kubectl("patch", PLURAL, "cel-probe", "-n", ns, "--subresource=status",
                           "--type=merge", "--dry-run=server", "-p", json.dumps(twins),
                           check=False).returncode == 0


@contextmanager
def crd_changed(cluster: LocalCluster, work: Path, ns: str, name: str,
                change: Callable[[Any], Any], served: Callable[[LocalCluster, str], bool]
                ) -> Iterator[None]:
    """The ApprovalRequest CRD changed by ``change`` while the block runs; ``served`` tells
    whether the API server serves the changed one."""
    original = CRDS_DIR / "approvalrequests.wingman.dev.yaml"
    changed = work / f"approvalrequests-{name}.yaml"
    changed.write_text(yaml.safe_dump(change(yaml.safe_load(original.read_text()))))
    try:
        _serve(cluster, changed, lambda: served(cluster, ns))
        yield
    finally:
        _serve(cluster, original, lambda: not served(cluster, ns))


def unbind_policies(cluster: LocalCluster, ns: str) -> None:
    """Delete the release's ValidatingAdmissionPolicyBindings; wait until they are unenforced
    (a request by someone else than its requester is then accepted)."""
    listed = json.loads(cluster.kubectl("get", "validatingadmissionpolicybindings", "-o",
                                        "json").stdout)
    names = [b["metadata"]["name"] for b in listed["items"]
             if b["metadata"]["name"].startswith(f"wingman-{ns}-")]
    cluster.kubectl("delete", "validatingadmissionpolicybindings", *names)
    body = request_body("policy-probe")
    body["spec"]["requester"] = "somebody-else"
    deadline = time.monotonic() + 60
    while cluster.kubectl("create", "--dry-run=server", "-n", ns, "-f", "-",
                          input=json.dumps(body), check=False, user=WORKER,
                          groups=worker_groups("test")).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the admission policies of {ns} still apply 60 s after their "
                               "bindings were deleted")
        time.sleep(0.5)


# --------------------------------------------------------------------------- measuring


@dataclass
class Figures:
    variant: str
    count: int
    bytes: int
    idle_ms: float  # kube-apiserver CPU per second before the writes
    api_ms: float  # kube-apiserver CPU per write
    etcd_ms: float
    p50_ms: float
    p95_ms: float


IDLE_SECONDS = 3


def sizes(obj: dict[str, Any]) -> str:
    """The JSON bytes of a stored object and of its parts."""
    meta = obj.get("metadata") or {}
    parts = {"object": obj, "spec": obj.get("spec"), "status": obj.get("status"),
             "managedFields": meta.get("managedFields"),
             "metadata without managedFields": {k: v for k, v in meta.items()
                                                if k != "managedFields"}}
    return ", ".join(f"{k} {len(json.dumps(v, separators=(',', ':')))}"
                     for k, v in parts.items() if v is not None)


def gone(cluster: LocalCluster, ns: str, timeout: float = 180) -> None:
    """Wait until the namespaces of a run are deleted: their deletion (every request in them)
    is API server work that must not fall into the next run's figures."""
    deadline = time.monotonic() + timeout
    for name in (ns, f"{ns}-apps"):
        while cluster.kubectl("get", "namespace", name, check=False).returncode == 0:
            if time.monotonic() > deadline:
                progress(f"namespace {name} still there {timeout:.0f} s after its deletion: "
                         "the next run's figures include its clean-up")
                return
            time.sleep(1)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0


def create_requests(cluster: LocalCluster, ns: str, count: int, threads: int
                    ) -> list[dict[str, Any]]:
    worker = client.CustomObjectsApi(cluster.api_client(WORKER, worker_groups("test")))

    def one(i: int) -> dict[str, Any]:
        made = worker.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL,
                                                      request_body(f"r{i:05d}"))
        return cast(dict[str, Any], made)
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def write_statuses(cluster: LocalCluster, ns: str, bodies: list[tuple[str, dict[str, Any]]],
                   threads: int) -> list[float]:
    """One merge patch of approvalrequests/status per (name, body), as the operator's
    ServiceAccount; the client latencies in seconds."""
    api = cluster.api_client(sa_user(ns, "wingman-operator"), sa_groups(ns))
    latencies: list[float] = []
    lock = threading.Lock()

    def one(item: tuple[str, dict[str, Any]]) -> None:
        name, body = item
        t0 = time.perf_counter()
        answer = api.call_api(
            "PATCH", f"{api.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/"
            f"{name}/status", header_params={"Content-Type": MERGE, "Accept": "application/json"},
            body=body)
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"the status write of {name} answered {answer.status}: "
                               f"{answer.data[:500]!r}")
        took = time.perf_counter() - t0
        with lock:
            latencies.append(took)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, bodies))
    return latencies


def profile_api(cluster: LocalCluster, path: Path, seconds: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(cluster.tool("kubectl")), "--kubeconfig", str(cluster.kubeconfig), "get", "--raw",
         f"/debug/pprof/profile?seconds={seconds}"], stdout=path.open("wb"),
        env=cluster.env(cluster.kubeconfig))


def run_variant(cluster: LocalCluster, work: Path, variant: str, status_of: StatusOf,
                first: StatusOf, count: int, threads: int, profile: int) -> Figures:
    # short: the ServiceAccounts' user names go into client certificates (64 characters)
    ns = f"sw{VARIANTS.index(variant)}-{time.time_ns() % 10**9}"
    with installed(cluster, "test", namespace=ns, target_namespace=f"{ns}-apps",
                   values=VALUES), contextmanager_for(variant, cluster, work, ns):
        made = create_requests(cluster, ns, count, threads)
        if variant == "noop-after-real":
            write_statuses(cluster, ns, [(o["metadata"]["name"], first(o)) for o in made],
                           threads)
        bodies = [(o["metadata"]["name"], status_of(o)) for o in made]
        size = statistics.mean(len(json.dumps(b)) for _, b in bodies)
        api_pid, etcd_pid = cluster.pid("kube-apiserver"), cluster.pid("etcd")
        time.sleep(2)  # the creates' watch events and audit lines are handled
        idle0 = cpu_seconds(api_pid)
        time.sleep(IDLE_SECONDS)
        idle = (cpu_seconds(api_pid) - idle0) / IDLE_SECONDS
        profiler = profile_api(cluster, work / f"{ns}.pprof", profile) if profile else None
        api0, etcd0 = cpu_seconds(api_pid), cpu_seconds(etcd_pid)
        try:
            latencies = write_statuses(cluster, ns, bodies, threads)
            time.sleep(1)  # the writes' watch events and audit lines are handled
            api1, etcd1 = cpu_seconds(api_pid), cpu_seconds(etcd_pid)
            stored = json.loads(cluster.kubectl("get", PLURAL, bodies[0][0], "-n", ns, "-o",
                                                "json", "--show-managed-fields").stdout)
            progress(f"{variant}: a request as stored: {sizes(stored)}")
        finally:
            if profiler is not None:
                profiler.wait()
                progress(f"profile: {work / f'{ns}.pprof'} (go tool pprof -top "
                         f"{cluster.tool('kube-apiserver')} <file>)")
    gone(cluster, ns)
    if profiler is not None:
        progress("profiled run: its figures are not comparable")
    figures = Figures(variant, count, int(size), idle * 1e3, (api1 - api0) / count * 1e3,
                      (etcd1 - etcd0) / count * 1e3, pct(latencies, 50) * 1e3,
                      pct(latencies, 95) * 1e3)
    progress(f"{variant}: {figures}")
    return figures


@contextmanager
def contextmanager_for(variant: str, cluster: LocalCluster, work: Path, ns: str
                       ) -> Iterator[None]:
    if variant == "no-cel":
        with crd_changed(cluster, work, ns, variant, without_cel, _duplicate_accepted):
            yield
        return
    if variant == "atomic-conditions":
        cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(request_body(
            "cel-probe")), user=WORKER, groups=worker_groups("test"))
        with crd_changed(cluster, work, ns, variant, atomic_conditions, _twins_accepted):
            yield
        return
    if variant == "no-policies":
        unbind_policies(cluster, ns)
    yield


def report(rows: list[Figures]) -> None:
    print(f"\n{'variant':<18} {'bytes':>6} {'api CPU ms/write':>22} {'etcd CPU ms/write':>18} "
          f"{'p50 ms':>14} {'p95 ms':>14} {'idle api ms/s':>14}")
    floor = [r.api_ms for r in rows if r.variant == "noop"]
    for variant in dict.fromkeys(r.variant for r in rows):
        mine = [r for r in rows if r.variant == variant]
        api = statistics.median(r.api_ms for r in mine)
        ratio = f" ({api / statistics.median(floor):.2f}x)" if floor else ""
        print(f"{variant:<18} {mine[0].bytes:>6} "
              f"{' '.join(f'{r.api_ms:.2f}' for r in mine):>12}{ratio:>10} "
              f"{' '.join(f'{r.etcd_ms:.2f}' for r in mine):>18} "
              f"{' '.join(f'{r.p50_ms:.1f}' for r in mine):>14} "
              f"{' '.join(f'{r.p95_ms:.1f}' for r in mine):>14} "
              f"{' '.join(f'{r.idle_ms:.0f}' for r in mine):>14}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="requests (and writes) a run")
    parser.add_argument("--threads", type=int, default=4, help="client threads writing")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="kube-apiserver's CPU profile over the first SECONDS of each "
                             "variant's writes (the first run's)")
    parser.add_argument("--no-audit-log", action="store_true",
                        help="the API server writes no audit log (bench_operator.py's does)")
    args = parser.parse_args()
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        parser.error(f"--variants takes some of {', '.join(VARIANTS)}, not {args.variants!r}")
    if args.count < 1 or args.threads < 1 or args.repeat < 1:
        parser.error("--count, --threads and --repeat must be at least 1")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        with stopping_on_signals():
            run(args, chosen)
        return 0
    except KeyboardInterrupt as exc:
        print(f"bench stopped ({exc.args[0] if exc.args else 'Ctrl-C'}); everything it "
              "started is stopped", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, chosen: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="wingman-bench-status-"))
    policy = test_policy()
    bodies = patches(policy)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{os.cpu_count()} CPUs; {args.count} writes a run, {args.threads} threads")
    rows: list[Figures] = []
    try:
        with LocalCluster.start(work / "cluster", audit_log=not args.no_audit_log) as cluster:
            cluster.apply_crds(CRDS_DIR)
            for i in range(args.repeat):  # alternating, so a drift of the machine hits all
                for variant in chosen:
                    progress(f"run {i + 1}/{args.repeat}: {variant}")
                    rows.append(run_variant(cluster, work, variant, bodies[variant],
                                            bodies["real"], args.count, args.threads,
                                            args.profile if i == 0 else 0))
        report(rows)
        sample = copy.deepcopy(bodies["real"](approvals_sample()))
        print(f"\nreal status write ({len(json.dumps(sample))} bytes):\n"
              f"{json.dumps(sample, indent=1)}")
    finally:
        load = os.getloadavg()
        print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        if not args.profile:
            shutil.rmtree(work, ignore_errors=True)
        else:
            progress(f"work directory kept (profiles): {work}")


def approvals_sample() -> dict[str, Any]:
    """A request as the API server answers its create: made a moment ago (reviewed later than
    its lifetime, it would be reviewed LifetimeEnded, not approved)."""
    body = request_body("r00000")
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["metadata"].update({"namespace": "sw", "uid": "u", "resourceVersion": "1",
                             "generation": 1, "creationTimestamp": made})
    return body


if __name__ == "__main__":
    sys.exit(main())
