"""A container image from a few static files, as a ``docker save`` archive that ``ctr images import``
reads: for the cluster's own add-on (CoreDNS, one static binary), with no image builder needed.

Deterministic: the same files give the same archive (mtime 0, sorted, uid/gid 0).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _layer(files: dict[str, Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for dest in sorted(files):
            parts = dest.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            src = files[dest]
            data = src.read_bytes()
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(data)
            info.mode = 0o755 if src.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_from_files(ref: str, files: dict[str, Path], *, entrypoint: list[str], out_dir: Path,
                     user: str = "0:0") -> Path:
    """Write ``<out_dir>/<name>-<digest>.tar`` (docker-archive, one layer) and return its path."""
    layer = _layer(files)
    layer_sha = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_sha}"]},
        "history": [{"created_by": "tests/e2e/ociarchive.py"}],
    }, sort_keys=True).encode()
    config_sha = hashlib.sha256(config).hexdigest()
    repo_tag = ref.removeprefix("docker.io/")
    manifest = json.dumps([{"Config": f"{config_sha}.json", "RepoTags": [repo_tag],
                            "Layers": [f"{layer_sha}/layer.tar"]}]).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{repo_tag.replace('/', '_').replace(':', '_')}-{config_sha[:12]}.tar"
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        members = ((f"{layer_sha}/layer.tar", layer), (f"{config_sha}.json", config), ("manifest.json", manifest))
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.rename(out)
    return out
