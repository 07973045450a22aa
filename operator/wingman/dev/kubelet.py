"""A real node for the local control plane: kubelet, kube-proxy and kube-scheduler beside
Debian's containerd, so pods run as real containers and the Job controller sees real phases.

What runs, all started and stopped by :class:`RealNode`:

- ``containerd`` (Debian's package, its CRI plugin; ``runc`` runs the containers) with a
  private root, state directory and socket, and the CNI plugins of ``containernetworking-
  plugins`` (bridge + host-local + portmap) giving every pod its own network namespace and IP;
- ``kubelet``, ``kube-proxy`` and ``kube-scheduler`` built from the pinned Kubernetes module
  (``.ci/provision-tools.sh``), each with its own identity: the kubelet a client certificate
  for ``system:node:<name>`` (the API server's Node authorizer and NodeRestriction apply),
  kube-proxy ``system:kube-proxy``, the scheduler ``system:kube-scheduler``;
- the node lives in its own network namespace, joined to the host by a veth pair: the host's
  end carries the API server's address (:attr:`RealNode.api_address`, which the cluster must
  listen on: ``LocalCluster.start(address=..., nodes=True)``), so pods reach the API server
  through the ``kubernetes`` Service's ClusterIP exactly as in a cluster (kube-proxy's iptables
  rules, in the node's namespace; pod traffic leaving the node is masqueraded). Several nodes
  on one machine never see each other's rules, ports or addresses.

The sandbox ("pause") image is made here from the ``pause`` command provisioning builds
(``.ci/tools/pause``), since public registries are out of reach; other images are imported
from ``docker save`` archives (:meth:`RealNode.import_image`).

Why containerd's ``restrict_oom_score_adj``: the CRI asks for pod sandboxes with
``oom_score_adj`` -998 (and the kubelet gives guaranteed pods negative scores). Lowering a
process's ``oom_score_adj`` needs ``CAP_SYS_RESOURCE``; where root lacks it (containers and
sandboxes such as these machines: ``echo -500 > /proc/self/oom_score_adj`` fails), runc's
``nsexec`` cannot write the value and every sandbox fails with "can't get final child's PID
from pipe: EOF". ``restrict_oom_score_adj = true`` clamps the requested value to containerd's
own, and the kubelet is told to leave its own score alone (``oomScoreAdj: 0``).

Stopping (also on Ctrl-C, SIGTERM and SIGHUP through the caller's clean-up) kills every
container of the node, stops the processes, unmounts what they mounted under the node's
directories, deletes the network namespace (and with it the bridge, veths and iptables rules)
and removes the node's cgroups: nothing is left running or mounted. When the owner dies by
SIGKILL, its components get SIGTERM (``setpriv --pdeathsig``) and the next node started on the
machine removes the rest (:func:`sweep_stale_nodes`, from the record each node keeps in its
run directory; nodes whose owner lives are left alone).

    node = RealNode(workdir)
    cluster = LocalCluster.start(address=node.api_address, nodes=True)
    node.start(cluster)
    node.import_image(Path("wingman.tar"))
    ...
    node.stop_processes(); cluster.stop(); node.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gzip
import hashlib
import io
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from wingman.dev import tools as devtools
from wingman.dev.cluster import LocalCluster
from wingman.dev.engine import storage_driver
from wingman.dev.processes import run_apart, stop_group
from wingman.errors import ClusterError

log = logging.getLogger(__name__)

NODE_NAME = "wingman-node"
#: The image containerd runs as every pod's sandbox (made here from the `pause` command).
PAUSE_IMAGE = "wingman.local/pause:1"
#: Pod addresses, inside the node's own network namespace (so every node may use the same).
POD_SUBNET = "10.88.0.0/16"
#: The host/node link addresses are /30s carved from here, one per node on the machine.
LINK_RANGE = "10.201.0.0/16"
CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Machine-wide (not under TMPDIR): nodes started with different TMPDIRs pick links in turn.
_RUN = Path("/run")
_LOCK = _RUN / "wingman-node-network.lock"
_MNT_DETACH = 2


def _cni_dir() -> Path | None:
    for d in CNI_DIRS:
        if all((d / p).is_file() for p in CNI_PLUGINS):
            return d
    return None


def unavailable() -> str | None:
    """Why a real node cannot run on this machine (what to install), or None when it can."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, network namespaces, cgroups, mounts)"
    missing = [p for p in ("containerd", "ctr", "runc", "nsenter", "setpriv", "ip",
                           "iptables-restore")
               if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
    if _cni_dir() is None:
        missing.append("the CNI plugins (" + ", ".join(CNI_PLUGINS) + ")")
    if missing:
        return ("a real node needs " + ", ".join(missing) + ": install Debian's containerd, "
                "runc, containernetworking-plugins and iptables (bash .ci/setup does)")
    tools = [t for t in devtools.NODE if devtools.find_tool(t) is None]
    if tools:
        return (", ".join(tools) + " not built: run `bash .ci/provision-tools.sh` (it builds "
                "them from the pinned Kubernetes module)")
    if not (CGROUP_ROOT / "memory").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").is_file():
        return f"no cgroup hierarchy at {CGROUP_ROOT}"
    return None


def _which(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path("/usr/sbin", name).exists()
                                   else None)
    if found is None:
        raise ClusterError(f"{name} is not installed; " + (unavailable() or ""),
                           reason="ToolMissing")
    return found


def _run(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = run_apart(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise ClusterError(f"{' '.join(argv)} failed (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-2000:]}")
    return result


# --------------------------------------------------------------------------- the sandbox image


def pause_image_archive(pause_binary: Path, name: str = PAUSE_IMAGE) -> bytes:
    """An OCI image layout archive (what ``ctr images import`` reads) of one layer holding
    ``/pause``, whose entrypoint it is."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("pause")
        data = pause_binary.read_bytes()
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    raw = layer.getvalue()
    packed = gzip.compress(raw, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
    }, sort_keys=True).encode()
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}"

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blob(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": blob(packed), "size": len(packed)}],
    }, sort_keys=True).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
        "size": len(manifest), "annotations": {"io.containerd.image.name": name,
                                               "org.opencontainers.image.ref.name": name}}]},
        sort_keys=True).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index,
                 **{f"blobs/sha256/{d}": b for d, b in blobs.items()}}
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# --------------------------------------------------------------------------- configuration


def containerd_config(wd: Path, socket: Path, cni_bin: Path, snapshotter: str) -> str:
    """containerd's configuration (version 2): private directories, the CRI plugin with
    restrict_oom_score_adj (see the module doc), the CNI configuration of this node."""
    return f"""version = 2
root = "{wd / 'root'}"
state = "{wd / 'state'}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{wd / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{wd / 'cni'}"
"""


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    """A bridge network: every pod an address of POD_SUBNET, traffic leaving the node
    masqueraded, host-local's leases in this node's own directory."""
    return {"cniVersion": "0.4.0", "name": "wingman", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
         "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": str(ipam_dir),
                  "ranges": [[{"subnet": POD_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}


def kubelet_config(*, wd: Path, ca: Path, socket: Path, node_ip: str, cgroup_root: str
                   ) -> dict[str, Any]:
    """The kubelet's KubeletConfiguration: cgroupfs, no swap check, webhook authn/z, its
    files under the node's directory, no image garbage collection of imported images."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node_ip, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "failSwapOn": False,
        # see the module doc: no CAP_SYS_RESOURCE, so no negative score for the kubelet
        "oomScoreAdj": 0,
        "clusterDomain": "cluster.local",
        "podLogsDir": str(wd / "pod-logs"),
        "volumePluginDir": str(wd / "volume-plugins"),
        "staticPodPath": "",
        "rotateCertificates": False, "serverTLSBootstrap": False,
        "serializeImagePulls": False,
        # the images are imported, never pulled: the garbage collector must not remove them
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "nodeStatusReportFrequency": "10s",
    }


def kube_proxy_config(kubeconfig: Path, node_name: str) -> dict[str, Any]:
    """kube-proxy in iptables mode; conntrack sysctls left alone (they are the host's)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables", "clusterCIDR": POD_SUBNET, "hostnameOverride": node_name,
        "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }


# --------------------------------------------------------------------------- mounts, cgroups


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unmount_all(root: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(3):
        points = _mounts_under(root)
        if not points:
            return
        for point in points:
            if libc.umount2(point.encode(), _MNT_DETACH) != 0:
                log.debug("umount %s: errno %d", point, ctypes.get_errno())


def _cgroup_dirs(name: str) -> list[Path]:
    """The node's cgroup directory in every hierarchy (v1 controllers, or the v2 root)."""
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return [CGROUP_ROOT / name]
    dirs = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if hierarchy.is_dir() and not hierarchy.is_symlink() and (
                hierarchy / "cgroup.procs").is_file():
            dirs.append(hierarchy / name)
    return dirs


def _make_cgroups(name: str) -> None:
    for d in _cgroup_dirs(name):
        d.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty until inherited
            if (d / knob).is_file() and not (d / knob).read_text().strip():
                (d / knob).write_text((d.parent / knob).read_text())


def _remove_cgroups(name: str) -> None:
    for top in _cgroup_dirs(name):
        if not top.is_dir():
            continue
        for d in _subdirs(top):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _subdirs(top: Path) -> list[Path]:
    """``top`` and every directory under it, deepest first. Cgroups vanish while they are
    walked (the kernel removes a container's as it exits): those are skipped, not errors."""
    found = [Path(d) for d, _, _ in os.walk(top)]  # os.walk ignores directories that vanish
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_cgroup_members(name: str) -> None:
    """SIGKILL every process in the node's cgroups (its containers), by pid."""
    for top in _cgroup_dirs(name):
        if not top.is_dir():
            continue
        for d in _subdirs(top):
            with contextlib.suppress(OSError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(pid), signal.SIGKILL)


def _pids_with(marker: bytes) -> list[int]:
    """Processes whose command line contains ``marker`` (a node's private path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), to tell a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _teardown(owner: dict[str, Any]) -> None:
    """Kill whatever of a node is still running (its containers by cgroup, its shims and
    components by their private paths), unmount, delete its network and cgroups, remove its
    directories. ``owner`` is what the node recorded in its run directory."""
    cgroup, run_dir, workdir = owner["cgroup"], Path(owner["run_dir"]), Path(owner["workdir"])
    for _ in range(3):
        _kill_cgroup_members(cgroup)
        # "<dir>/": a path inside the node's directories, never a sibling sharing a prefix
        pids = _pids_with(f"{run_dir}/".encode()) + _pids_with(f"{workdir}/".encode())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not pids:
            break
        time.sleep(0.2)
    _unmount_all(run_dir)
    _unmount_all(workdir)
    with contextlib.suppress(Exception):
        _run(_which("ip"), "netns", "delete", owner["netns"], check=False)
    with contextlib.suppress(Exception):
        _run(_which("ip"), "link", "delete", owner["host_link"], check=False)
    for _ in range(10):
        _remove_cgroups(cgroup)
        if not any(d.exists() for d in _cgroup_dirs(cgroup)):
            break
        time.sleep(0.2)
    shutil.rmtree(run_dir, ignore_errors=True)
    if owner.get("owns_workdir"):
        shutil.rmtree(workdir, ignore_errors=True)


def sweep_stale_nodes() -> list[str]:
    """Tear down nodes whose owner died without stopping them (SIGKILL): their containers,
    mounts, network namespaces and cgroups. Nodes of live processes are left alone. Returns
    the network namespaces removed."""
    removed = []
    for run_dir in sorted(_RUN.glob("wingman-node-*")):
        record = run_dir / "owner.json"
        try:
            owner = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if _start_time(int(owner["pid"])) == owner.get("start"):
            continue  # its owner is alive
        log.warning("removing node %s left behind by process %s", owner["netns"],
                    owner["pid"])
        _teardown(owner)
        removed.append(str(owner["netns"]))
    return removed


# --------------------------------------------------------------------------- the node


class RealNode:
    """kubelet + kube-proxy + kube-scheduler + containerd in a network namespace of their own.

    Create it before the cluster (its :attr:`api_address` is where the API server must listen),
    then :meth:`start` it against the cluster; :meth:`stop` undoes everything."""

    def __init__(self, workdir: Path | None = None, *, node_name: str = NODE_NAME,
                 timeout: float = 120.0) -> None:
        reason = unavailable()
        if reason is not None:
            raise ClusterError(f"cannot run a real node here: {reason}", reason="NodeUnavailable")
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="wingman-node-")) if workdir is None \
            else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.node_name = node_name
        self.timeout = timeout
        self.id = uuid.uuid4().hex[:8]
        self.netns = f"wingman-node-{self.id}"
        self.cgroup = f"wingman-node-{self.id}"
        # unix socket paths are limited to 107 bytes: containerd's socket and the kubelet's
        # directory (its sockets, its pods' volumes) live in a short directory
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"wingman-node-{self.id}-", dir=_RUN))
        self.socket = self.run_dir / "containerd.sock"
        self._host_link = f"wmn{self.id}"
        self._owner = {"pid": os.getpid(), "start": _start_time(os.getpid()),
                       "netns": self.netns, "host_link": self._host_link, "cgroup": self.cgroup,
                       "run_dir": str(self.run_dir), "workdir": str(self.workdir),
                       "owns_workdir": self._owns_workdir}
        # what sweep_stale_nodes() needs to remove this node should its owner be SIGKILLed
        (self.run_dir / "owner.json").write_text(json.dumps(self._owner))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._cluster: LocalCluster | None = None
        self._stopped = False
        #: overlayfs where the kernel mounts overlays in the node's directory, else native
        #: (copies; slower but works everywhere), probed as the Docker Engine's driver is
        self.snapshotter = "overlayfs" if storage_driver(self.workdir) == "overlay2" \
            else "native"
        try:
            sweep_stale_nodes()
            self.api_address, self.node_ip = self._create_network()
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------------ network

    def _create_network(self) -> tuple[str, str]:
        """The node's network namespace and a veth pair to the host, on a free /30."""
        ip = _which("ip")
        _LOCK.touch(exist_ok=True)
        with open(_LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = set()
            for line in _run(ip, "-o", "-4", "addr", "show").stdout.splitlines():
                fields = line.split()
                if "inet" in fields:
                    used.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
            link = next((n for n in ipaddress.ip_network(LINK_RANGE).subnets(new_prefix=30)
                         if not any(n.overlaps(u) for u in used)), None)
            if link is None:
                raise ClusterError(f"no free /30 left in {LINK_RANGE} for the node's link")
            host, node = (str(a) for a in list(link.hosts())[:2])
            _run(ip, "netns", "add", self.netns)
            _run(ip, "link", "add", self._host_link, "type", "veth", "peer", "name", "eth0",
                 "netns", self.netns)
            _run(ip, "addr", "add", f"{host}/30", "dev", self._host_link)
            _run(ip, "link", "set", self._host_link, "up")
        inside = [ip, "-n", self.netns]
        _run(*inside, "addr", "add", f"{node}/30", "dev", "eth0")
        _run(*inside, "link", "set", "eth0", "up")
        _run(*inside, "link", "set", "lo", "up")
        _run(*inside, "route", "add", "default", "via", host)
        return host, node

    def _in_netns(self, argv: Sequence[str]) -> list[str]:
        return [_which("nsenter"), f"--net=/run/netns/{self.netns}", "--", *argv]

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: Sequence[str], *, netns: bool = True) -> None:
        """Start a component in its own session; ``setpriv --pdeathsig TERM`` stops it when the
        process that started it dies, even by SIGKILL."""
        logfile = open(self.workdir / f"{name}.log", "ab")
        command = self._in_netns(argv) if netns else list(argv)
        try:
            proc = subprocess.Popen(
                [_which("setpriv"), "--pdeathsig", "TERM", "--", *command], stdout=logfile,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=self.workdir)
        finally:
            logfile.close()
        self._procs[name] = proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with code {proc.returncode}; last lines of its log "
                    f"({self.workdir / (name + '.log')}):\n{self.log_tail(name)}")

    def ctr(self, *args: str, timeout: float = 300, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """Run containerd's ``ctr`` against this node's containerd, namespace k8s.io."""
        return _run(_which("ctr"), "--address", str(self.socket), "--namespace", "k8s.io",
                    *args, timeout=timeout, check=check)

    # ------------------------------------------------------------------ start

    def start(self, cluster: LocalCluster) -> None:
        """Start containerd, the sandbox image, kube-scheduler, kube-proxy and the kubelet;
        wait until the Node is Ready and schedulable."""
        if cluster.address != self.api_address or not cluster.nodes:
            raise ClusterError(
                "the cluster must be started for this node: LocalCluster.start(address="
                f"{self.api_address!r}, nodes=True) (got address {cluster.address!r}, "
                f"nodes={cluster.nodes})")
        self._cluster = cluster
        try:
            self._start(cluster)
        except BaseException:
            self.stop()
            raise

    def _start(self, cluster: LocalCluster) -> None:
        wd = self.workdir
        cni_bin = _cni_dir()
        assert cni_bin is not None
        ctd = wd / "containerd"
        (ctd / "cni").mkdir(parents=True, exist_ok=True)
        (ctd / "cni" / "10-wingman.conflist").write_text(
            json.dumps(cni_config(ctd / "cni-ipam"), indent=1))
        (ctd / "config.toml").write_text(containerd_config(ctd, self.socket, cni_bin,
                                                           self.snapshotter))
        self._spawn("containerd", [_which("containerd"), "--config", str(ctd / "config.toml"),
                                   "--log-level", "info"])
        deadline = time.monotonic() + self.timeout
        while self.ctr("version", check=False, timeout=10).returncode != 0:
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"containerd did not serve within {self.timeout:.0f}s:\n"
                                   f"{self.log_tail('containerd')}")
            time.sleep(0.2)
        archive = wd / "pause.tar"
        archive.write_bytes(pause_image_archive(devtools.tool_path("pause")))
        self.import_image(archive)
        archive.unlink()

        _make_cgroups(self.cgroup)
        ca = cluster.ca_file
        kubelet_kc = cluster.kubeconfig_for(f"system:node:{self.node_name}", ["system:nodes"])
        proxy_kc = cluster.kubeconfig_for("system:kube-proxy")
        sched_kc = cluster.kubeconfig_for("system:kube-scheduler")
        self._spawn("kube-scheduler", [
            str(devtools.tool_path("kube-scheduler")),
            "--kubeconfig", str(sched_kc), "--authentication-kubeconfig", str(sched_kc),
            "--authorization-kubeconfig", str(sched_kc), "--leader-elect=false",
            "--secure-port", "0", "--v", "1"], netns=False)
        (wd / "kube-proxy.yaml").write_text(yaml.safe_dump(
            kube_proxy_config(proxy_kc, self.node_name)))
        self._spawn("kube-proxy", [str(devtools.tool_path("kube-proxy")),
                                   "--config", str(wd / "kube-proxy.yaml"), "--v", "1"])
        (wd / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(
            wd=wd, ca=ca, socket=self.socket, node_ip=self.node_ip,
            cgroup_root=f"/{self.cgroup}")))
        self._spawn("kubelet", [
            str(devtools.tool_path("kubelet")), "--config", str(wd / "kubelet.yaml"),
            # its sockets (pod-resources, device and plugin registration) live under it
            "--kubeconfig", str(kubelet_kc), "--root-dir", str(self.run_dir / "kubelet"),
            "--cert-dir", str(wd / "kubelet-pki"), "--hostname-override", self.node_name,
            "--node-ip", self.node_ip, "--v", "1"])
        self._wait_node_ready(deadline)

    def _wait_node_ready(self, deadline: float) -> None:
        assert self._cluster is not None
        last = "not registered"
        while time.monotonic() < deadline:
            self._check_alive()
            res = self._cluster.kubectl("get", "node", self.node_name, "-o", "json",
                                        check=False)
            if res.returncode == 0:
                node = json.loads(res.stdout)
                ready = [c for c in node.get("status", {}).get("conditions", [])
                         if c.get("type") == "Ready"]
                taints = [t.get("key") for t in node.get("spec", {}).get("taints") or []]
                last = f"Ready={ready[0].get('status') if ready else '?'} " \
                       f"({ready[0].get('message', '') if ready else ''}), taints {taints}"
                if ready and ready[0].get("status") == "True" and not taints:
                    return
            time.sleep(0.5)
        raise ClusterError(f"node {self.node_name} did not become Ready and untainted within "
                           f"{self.timeout:.0f}s: {last}; the kubelet's log:\n"
                           f"{self.log_tail('kubelet')}")

    def import_image(self, archive: Path) -> None:
        """Import an image archive (``docker save`` output or an OCI layout tar)."""
        self.ctr("images", "import", "--snapshotter", self.snapshotter,
                 str(archive), timeout=600)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Kill every container of the node, stop its processes, unmount, delete its network
        namespace and cgroups, remove its directory. Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        self.stop_processes()
        _teardown(self._owner)

    def stop_processes(self) -> None:
        """Kill every container of the node, stop its processes and unmount what they
        mounted, but keep the network: stop the cluster listening on :attr:`api_address`
        before :meth:`stop` removes that address (an API server whose address vanished
        hangs in its shutdown)."""
        for name in ("kubelet", "kube-proxy", "kube-scheduler"):
            self._terminate(name)
        if "containerd" in self._procs and self._procs["containerd"].poll() is None:
            self._kill_containers()
        self._terminate("containerd")
        self._kill_shims()
        _unmount_all(self.run_dir)
        _unmount_all(self.workdir)

    def _terminate(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None:
            stop_group(proc, timeout=15)

    def _kill_containers(self) -> None:
        """Kill and delete every task (container process) of this node's containerd."""
        res = self.ctr("tasks", "ls", "-q", check=False, timeout=30)
        ids = res.stdout.split() if res.returncode == 0 else []
        if ids:
            self.ctr("tasks", "delete", "--force", *ids, check=False, timeout=60)

    def _kill_shims(self) -> None:
        """Shims of this containerd that outlived it (found by its socket) and their
        children: SIGKILL, by pid."""
        marker = str(self.socket).encode()
        for pid in _pids_with(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> RealNode:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def cluster_with_node(workdir: Path | None = None, *, images: Sequence[Path] = (),
                      audit_log: bool = False) -> Iterator[tuple[LocalCluster, RealNode]]:
    """A local control plane with a real node joined, the image archives imported; both
    stopped on exit (whatever ends the block)."""
    node = RealNode(None if workdir is None else workdir / "node")
    try:
        cluster = LocalCluster.start(None if workdir is None else workdir / "cluster",
                                     address=node.api_address, nodes=True, audit_log=audit_log)
        try:
            node.start(cluster)
            for archive in images:
                node.import_image(archive)
            yield cluster, node
        finally:
            node.stop_processes()
            cluster.stop()
    finally:
        node.stop()


__all__ = ["NODE_NAME", "PAUSE_IMAGE", "POD_SUBNET", "RealNode", "cluster_with_node",
           "cni_config", "containerd_config", "kube_proxy_config", "kubelet_config",
           "pause_image_archive", "sweep_stale_nodes", "unavailable"]
