"""The real node's pure parts: the sandbox image archive and the containerd configuration."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tomllib
from pathlib import Path

from wingman.dev import kubelet


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                if m.isfile()}


def test_the_sandbox_archive_is_an_oci_layout_whose_digests_hold(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    files = _members(kubelet.pause_image_archive(binary, "example.test/pause:1"))
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "example.test/pause:1"

    def blob(digest: str) -> bytes:
        data = files[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
        assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
        return data

    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    (layer_ref,) = manifest["layers"]
    raw = gzip.decompress(blob(layer_ref["digest"]))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(raw).hexdigest()}"]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.getmember("pause")
        assert member.mode & 0o111
        assert tar.extractfile(member).read() == binary.read_bytes()  # type: ignore[union-attr]


def test_containerd_clamps_oom_score_adj_and_keeps_to_its_own_directories(
        tmp_path: Path) -> None:
    """Without restrict_oom_score_adj every sandbox fails where root lacks CAP_SYS_RESOURCE
    (runc cannot write the -998 the CRI asks for)."""
    sock = tmp_path / "c.sock"
    config = tomllib.loads(kubelet.containerd_config(tmp_path, sock, Path("/usr/lib/cni"),
                                                     "native"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == kubelet.PAUSE_IMAGE
    assert cri["containerd"]["snapshotter"] == "native"
    opt = config["plugins"]["io.containerd.internal.v1.opt"]["path"]
    for path in (config["root"], config["state"], config["grpc"]["address"],
                 cri["cni"]["conf_dir"], opt):
        assert Path(path).is_relative_to(tmp_path), path
    assert cri["netns_mounts_under_state_dir"] is True


def test_cgroup_trees_are_walked_deepest_first_and_a_vanished_one_is_no_error(
        tmp_path: Path) -> None:
    # a SIGKILLed node's containers exit while the next node tears it down: their cgroups
    # disappear mid-walk, which must not abort the clean-up
    (tmp_path / "kubepods" / "besteffort" / "pod1" / "c1").mkdir(parents=True)
    (tmp_path / "kubepods" / "burstable").mkdir()
    found = kubelet._subdirs(tmp_path)
    assert found[0] == tmp_path / "kubepods" / "besteffort" / "pod1" / "c1"
    assert found[-1] == tmp_path and len(found) == 6
    assert kubelet._subdirs(tmp_path / "gone") == []
