"""A private, real Docker Engine for the container tests and the dev harness.

:class:`DockerEngine` starts Debian's ``dockerd`` (package ``docker.io``) as root with a
configuration that works on machines without bridge networking or overlay filesystems and
touches nothing shared:

- the storage driver is ``overlay2`` when the kernel mounts overlay filesystems on the
  engine's directory (probed with a real mount), else ``vfs``, which works everywhere but
  copies the whole image for every container (tens of seconds for Wingman's image);
  ``WINGMAN_DOCKER_STORAGE_DRIVER`` forces one;
- ``--bridge=none --iptables=false --ip-masq=false`` (no host network changes; containers
  use ``--network none`` or ``host``);
- a private ``-H unix://`` socket, data root, exec root and pidfile in its own directory, so
  several engines (one per test session) run side by side and none touches the system's
  ``/var/run/docker.sock`` or ``/var/lib/docker``;
- dockerd runs in its own session, with ``setpriv --pdeathsig TERM``, so it stops when the
  process that started it dies, even by SIGKILL.

:meth:`DockerEngine.stop` stops dockerd (which stops its containers and its containerd), kills
whatever of its own is left (found by its private socket path, never by name), unmounts what it
mounted and removes its directory.

    with DockerEngine.start() as engine:
        client = engine.client()
        engine.import_rootfs(Path("rootfs.tar"), "wingman-base:local")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from wingman.dev.processes import run_apart, stop_group
from wingman.errors import ClusterError

DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
                 "--userland-proxy=false")
STORAGE_DRIVERS = ("overlay2", "vfs")


def storage_driver(directory: Path) -> str:
    """``overlay2`` when an overlay filesystem mounts in ``directory``, else ``vfs``."""
    forced = os.environ.get("WINGMAN_DOCKER_STORAGE_DRIVER", "").strip()
    if forced:
        if forced not in STORAGE_DRIVERS:
            raise ClusterError(f"WINGMAN_DOCKER_STORAGE_DRIVER={forced!r} must be one of "
                               f"{', '.join(STORAGE_DRIVERS)}", reason="BadConfig")
        return forced
    probe = Path(tempfile.mkdtemp(prefix="overlay-probe-", dir=directory))
    try:
        for part in ("lower", "upper", "work", "merged"):
            (probe / part).mkdir()
        opts = f"lowerdir={probe}/lower,upperdir={probe}/upper,workdir={probe}/work"
        mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts,
                                  str(probe / "merged")], capture_output=True, check=False)
        if mounted.returncode != 0:
            return "vfs"
        subprocess.run(["umount", str(probe / "merged")], capture_output=True, check=False)
        return "overlay2"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _need(binary: str, package: str) -> str:
    found = shutil.which(binary) or next(
        (str(d / binary) for d in (Path("/usr/sbin"), Path("/usr/bin"), Path("/sbin"))
         if (d / binary).is_file()), None)
    if found is None:
        raise ClusterError(
            f"{binary} was not found; install Debian's {package} package ('bash .ci/setup' does: "
            f"apt-get install {package})",
            reason="ToolMissing",
        )
    return found


def docker_cli() -> str:
    """The docker CLI the engine's helpers use: Debian's (it speaks the engine's API and has
    BuildKit built in), else the first on PATH."""
    debian = Path("/usr/bin/docker")
    return str(debian) if debian.is_file() else _need("docker", "docker.io")


@dataclass
class DockerEngine:
    """A running private dockerd; create it with :meth:`start`, end it with :meth:`stop`."""

    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    driver: str = "vfs"
    _owns_workdir: bool = True
    _clients: list[Any] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "docker.sock"

    @property
    def host(self) -> str:
        """The engine's address for ``DOCKER_HOST`` / ``docker.DockerClient(base_url=...)``."""
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        return self.workdir / "data"

    @property
    def exec_root(self) -> Path:
        return self.workdir / "exec"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dockerd.log"

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, workdir: Path | None = None, *, timeout: float = 60.0) -> DockerEngine:
        """Start dockerd and wait until it answers; ClusterError says why when it cannot."""
        if os.geteuid() != 0:
            raise ClusterError("the private Docker Engine runs dockerd, which needs root; run the "
                               "container tests as root", reason="NotRoot")
        dockerd = _need("dockerd", "docker.io")
        setpriv = _need("setpriv", "util-linux")
        # Unix socket paths are limited to 107 bytes; containerd's sockets live under the exec
        # root, so the engine's directory is a short one under /tmp unless one is given.
        owns = workdir is None
        wd = Path(tempfile.mkdtemp(prefix="wm-docker-", dir="/tmp")) if workdir is None else workdir
        wd.mkdir(parents=True, exist_ok=True)
        engine = cls(wd, _owns_workdir=owns)
        if len(str(engine.exec_root / "containerd" / "containerd.sock.ttrpc")) > 100:
            raise ClusterError(f"the engine directory {wd} is too long for unix socket paths; "
                               "use a shorter one", reason="BadPath")
        engine.driver = storage_driver(wd)
        argv = [setpriv, "--pdeathsig", "TERM", "--", dockerd, *DOCKERD_FLAGS,
                f"--storage-driver={engine.driver}",
                "-H", engine.host, "--data-root", str(engine.data_root),
                "--exec-root", str(engine.exec_root), "--pidfile", str(wd / "dockerd.pid"),
                "--log-level", "warn"]
        log = open(engine.log_path, "wb")
        try:
            engine.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           env=_engine_env())
        finally:
            log.close()
        try:
            engine._wait_ready(timeout)
        except BaseException:
            engine.stop()
            raise
        return engine

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ClusterError(f"dockerd exited with code {self.proc.returncode} during "
                                   f"start-up; its log ({self.log_path}):\n{self.log_tail()}",
                                   reason="EngineFailed")
            if self.socket.exists():
                result = self.docker("version", "--format", "{{.Server.Version}}", check=False)
                if result.returncode == 0:
                    return
                last = result.stderr.strip()
            time.sleep(0.3)
        raise ClusterError(f"dockerd did not answer within {timeout:.0f}s ({last}); its log:\n"
                           f"{self.log_tail()}", reason="EngineFailed")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _own_pids(self) -> list[int]:
        """Processes that belong to this engine: their command line names its directory."""
        marker = str(self.workdir).encode()
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
        return out

    def _unmount_all(self) -> None:
        prefix = str(self.workdir) + "/"
        try:
            mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = [line.split()[4] for line in mounts if len(line.split()) > 4]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            run_apart(["umount", "-l", point], capture_output=True, check=False)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop dockerd (it stops its containers and containerd), then anything left of it."""
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        if self.proc is not None and self.proc.poll() is None:
            # Containers first, while the engine answers (dockerd would stop them too, but a
            # killed engine leaves their processes behind).
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", check=False, timeout=20).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False, timeout=60)
            stop_group(self.proc, timeout=timeout)
        # containerd and its shims run in sessions of their own; they carry our paths.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._own_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while self._own_pids() and time.monotonic() < deadline:
                time.sleep(0.1)
        self._unmount_all()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DockerEngine:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ use

    def env(self) -> dict[str, str]:
        """The environment for docker clients of this engine (and nothing else)."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        env.pop("DOCKER_TLS_VERIFY", None)
        env.pop("DOCKER_CERT_PATH", None)
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 300,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine."""
        result = run_apart([docker_cli(), "-H", self.host, *args], capture_output=True,
                           timeout=timeout, env=self.env(), input=input)
        out = subprocess.CompletedProcess(
            result.args, result.returncode, result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"))
        if check and out.returncode != 0:
            raise ClusterError(f"docker {' '.join(args)} failed (exit {out.returncode}): "
                               f"{out.stderr.strip()[-2000:]}", reason="EngineFailed")
        return out

    def client(self) -> Any:
        """A ``docker.DockerClient`` for this engine (closed when the engine stops)."""
        import docker

        client = docker.DockerClient(base_url=self.host, timeout=120)
        self._clients.append(client)
        return client

    def import_rootfs(self, tarball: Path, tag: str) -> str:
        """``docker import`` a root filesystem tarball as image ``tag``; its image id."""
        with open(tarball, "rb") as fh:
            result = subprocess.run([docker_cli(), "-H", self.host, "import", "-", tag],
                                    stdin=fh, capture_output=True, env=self.env(), timeout=600)
        if result.returncode != 0:
            raise ClusterError(f"docker import of {tarball} failed: "
                               f"{result.stderr.decode(errors='replace').strip()}",
                               reason="EngineFailed")
        return result.stdout.decode().strip()

    def has_image(self, tag: str) -> bool:
        return self.docker("image", "inspect", tag, check=False).returncode == 0


def _engine_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    # dockerd finds containerd, runc and docker-init on PATH; Debian puts some in sbin
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    path += [p for p in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin",
                         "/bin") if p not in path]
    env["PATH"] = os.pathsep.join(path)
    return env


@contextlib.contextmanager
def running(workdir: Path | None = None) -> Iterator[DockerEngine]:
    """Context manager: a started DockerEngine, stopped on exit."""
    engine = DockerEngine.start(workdir)
    try:
        yield engine
    finally:
        engine.stop()


__all__ = ["DOCKERD_FLAGS", "STORAGE_DRIVERS", "DockerEngine", "docker_cli", "running",
           "storage_driver"]
