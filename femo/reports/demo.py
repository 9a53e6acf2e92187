"""Where a report notebook's data and trained run come from.

Every notebook starts with ``paths = demo.resolve(data=data, run_dir=run_dir)`` (``from femo.reports import demo``):

* both empty: a small synthetic smoke set (:data:`SMOKE`) is built once, extracted, and a small
  fusion model trained on fold 1, all cached under ``<femo cache>/demo/<key>/`` (key = femo
  version + smoke settings + a fingerprint of femo's source). A lock file makes concurrent notebook runs wait for one build
  instead of racing; ``done.json`` is written last, and an interrupted build resumes its steps.
* ``data`` = a manifest CSV (its feature store is ``<folder>/store`` for ``manifest.csv``, else
  ``<folder>/<stem>_store``, extracted on first use), a feature-store folder (``store.json``),
  or a folder holding ``manifest.csv``.
* ``run_dir`` = a trained run folder (``femo train --out RUN``, or a k-fold ``--folds all`` run); with ``data`` given and no
  ``run_dir``, :attr:`DemoPaths.run` raises a message saying how to get one.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import femo
from femo.assets import cache_dir
from femo.training.defaults import FACE_ENCODERS


#: femo sources (relative to the package) that shape the demo's clips and feature store ...
DATA_SOURCES: tuple[str, ...] = ("data", "features", "assets.py")
#: ... and those that shape its embeddings and trained run (a change there only retrains).
RUN_SOURCES: tuple[str, ...] = ("models", "features/embed.py", "training", "config.py")


@dataclass(frozen=True)
class SmokeSettings:
    """Size of the cached demo: synthetic clips/subjects/seconds/frame side; training epochs, peak
    learning rate and test fold of the small model."""

    clips: int = 70
    subjects: int = 10
    seconds: float = 1.0
    size: int = 128
    epochs: int = 15
    lr: float = 3e-3
    fold: int = 1
    seed: int = 0

    @property
    def data_key(self) -> str:
        """Folder of the clips and store: femo version, data settings, fingerprint of DATA_SOURCES."""
        return (f"v{femo.__version__}-clips{self.clips}-subjects{self.subjects}-seconds{self.seconds}"
                f"-size{self.size}-seed{self.seed}-{source_fingerprint(DATA_SOURCES)}")

    @property
    def run_key(self) -> str:
        """Folder of the trained run inside the data folder: training settings + RUN_SOURCES fingerprint."""
        return f"epochs{self.epochs}-lr{self.lr}-fold{self.fold}-{source_fingerprint(RUN_SOURCES)}"

    @property
    def key(self) -> str:
        """Both keys: a demo built by older code (or other settings) is never reused."""
        return f"{self.data_key}/{self.run_key}"


def source_fingerprint(parts: tuple[str, ...]) -> str:
    """12 hex digits of sha256 over the femo Python sources under ``parts`` (paths and contents)."""
    root = Path(femo.__file__).parent
    digest = hashlib.sha256()
    files = sorted(f for part in parts for f in ([root / part] if part.endswith(".py")
                                                  else (root / part).rglob("*.py")))
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


SMOKE = SmokeSettings()


class DemoError(FileNotFoundError):
    """A data or run path is missing or is not what femo expects; the message names it."""


@dataclass(frozen=True)
class DemoPaths:
    """Resolved inputs of a report: manifest CSV (may be None for a bare store), feature store, run."""

    manifest: Path | None
    store: Path
    run_path: Path | None = None

    @property
    def run(self) -> Path:
        """The trained run folder; raises :class:`DemoError` when none was given."""
        if self.run_path is None:
            raise DemoError(f"no trained run for {self.store}: pass run_dir (`femo report --run RUN`) "
                            f"or train one with `femo train {self.store} --out RUN`")
        return self.run_path


def resolve(*, data: str = "", run_dir: str = "", cache: str | Path | None = None,
            log: Callable[[str], None] = print) -> DemoPaths:
    """The manifest, feature store and run a notebook should use (see the module docstring)."""
    run = _existing_run(run_dir) if run_dir else None
    if not data:
        demo = build_demo(cache=cache, log=log)
        return DemoPaths(demo.manifest, demo.store, run or demo.run_path)
    manifest, store = resolve_data(data, log=log)
    return DemoPaths(manifest, store, run)


def resolve_data(data: str | Path, *, log: Callable[[str], None] = print) -> tuple[Path | None, Path]:
    """``data`` (manifest CSV, store folder, or folder with manifest.csv) -> (manifest, store)."""
    path = Path(data).expanduser().resolve()
    if not path.exists():
        raise DemoError(f"data path not found: {path}")
    if path.is_dir() and (path / "store.json").is_file():
        from femo.data.store import read_meta

        recorded = read_meta(path).manifest
        manifest = Path(recorded) if recorded and Path(recorded).is_file() else None
        return manifest, path
    if path.is_dir():
        if not (path / "manifest.csv").is_file():
            raise DemoError(f"{path}: neither a feature store (store.json) nor a folder with manifest.csv")
        path = path / "manifest.csv"
    if path.suffix.lower() != ".csv":
        raise DemoError(f"{path}: expected a manifest .csv, a feature-store folder or a folder with manifest.csv")
    store = store_for(path)
    with _locked(store.with_name(store.name + ".lock")):
        if not (store / "index.csv").is_file():
            log(f"extracting features of {path} into {store}")
            _extract(path, store)
    return path, store


def store_for(manifest: Path) -> Path:
    """The default feature-store folder of a manifest: ``store`` beside ``manifest.csv``, else ``<stem>_store``."""
    name = "store" if manifest.name == "manifest.csv" else f"{manifest.stem}_store"
    return manifest.parent / name


def pick_embeddings(store: str | Path, name: str = "") -> str | None:
    """Cached embeddings to train on: ``name``, or the first found for "" (None when there are none),
    or None for "none" (the model then runs its own frame CNN on the face crops)."""
    found = sorted(p.name for p in (Path(store) / "embeddings").glob("*") if (p / "meta.json").is_file())
    if name == "none" or (not name and not found):
        return None
    if not name:
        return found[0]
    if name not in found:
        raise DemoError(f"{store}: no cached embeddings {name!r}; found {found or 'none'} "
                        f"(cache them with `femo extract MANIFEST --out STORE --embed {name}`)")
    return name


def _existing_run(run_dir: str | Path) -> Path:
    path = Path(run_dir).expanduser().resolve()
    if not path.is_dir():
        raise DemoError(f"run_dir not found: {path}")
    from femo.training.runs import RunFolder

    if not (path / "config.json").is_file() and not RunFolder(path).is_kfold:
        raise DemoError(f"{path}: not a run folder (neither config.json nor fold_<k>/best.pt); "
                        "train one with `femo train STORE --out RUN` (or `--folds all`)")
    return path


def build_demo(*, settings: SmokeSettings = SMOKE, cache: str | Path | None = None,
               log: Callable[[str], None] = print) -> DemoPaths:
    """Build (once) and return the cached smoke set: synthetic clips, feature store, trained run.

    Layout: ``<cache>/demo/<data_key>/{data,store}`` and ``.../runs/<run_key>/`` (the run), with
    ``<run_key>.done.json`` written last. A lock on ``<data_key>.lock`` serialises builders.
    """
    root = cache_dir(cache) / "demo"
    folder = root / settings.data_key
    run = folder / "runs" / settings.run_key
    done = run.with_name(run.name + ".done.json")
    if not done.is_file():
        with _locked(root / f"{settings.data_key}.lock"):
            if not done.is_file():
                _build(folder, run, settings, log)
                done.write_text(json.dumps(asdict(settings)) + "\n")
    return DemoPaths(folder / "data" / "manifest.csv", folder / "store", run)


def _build(folder: Path, run: Path, settings: SmokeSettings, log: Callable[[str], None]) -> None:
    """Build the missing parts; each step resumes what an interrupted build left."""
    from femo.data.synth import SynthConfig, generate

    started = time.monotonic()
    log(f"building the demo set in {folder} (once; later runs reuse it)")
    manifest = folder / "data" / "manifest.csv"
    if not manifest.is_file():  # written atomically, last, by generate
        generate(folder / "data", SynthConfig(clips=settings.clips, subjects=settings.subjects,
                                              seconds=settings.seconds, size=settings.size, seed=settings.seed),
                 log=log)
    _extract(manifest, folder / "store")  # resumable: skips clips already extracted
    # A new run key may mean a changed encoder: recompute the embeddings it trains on.
    cache_embeddings(folder / "store", force=True, log=log)
    shutil.rmtree(run, ignore_errors=True)
    _train(folder / "store", run, settings)
    log(f"demo set ready in {time.monotonic() - started:.0f} s")


#: Frame encoders tried, in order, for cached embeddings (the first whose weights are provisioned):
#: the one list of femo.training.defaults (edit it there).
EMBEDDING_ENCODERS: tuple[str, ...] = FACE_ENCODERS


def cache_embeddings(store: str | Path, *, force: bool = False, log: Callable[[str], None] = print) -> str | None:
    """Cache frozen face-encoder embeddings in ``store`` with the first provisioned encoder of
    :data:`EMBEDDING_ENCODERS` (``force`` recomputes existing files); returns its name, or None
    (with a message) when none is provisioned."""
    from femo.features.embed import cache_embeddings as embed

    for name in EMBEDDING_ENCODERS:
        try:
            embed(store, encoder=name, progress=False, force=force)
        except FileNotFoundError as exc:  # weights not provisioned (MissingModelError / MissingWeightsError)
            log(f"embeddings {name}: skipped ({exc})")
            continue
        return name
    log("no face-encoder weights provisioned (`femo models fetch --face-weights`); "
        "models will run their own frame CNN on the face crops")
    return None


def _extract(manifest: Path, store: Path) -> None:
    """Extract ``manifest`` into ``store`` with the default settings (clips that fail are recorded
    in the index and left out of training)."""
    from femo.data.manifest import read_manifest
    from femo.features.clip import ExtractConfig
    from femo.features.extract import run_extraction

    frame, meta = read_manifest(manifest)
    run_extraction(frame, store, classes=meta.classes, dataset=meta.dataset, manifest_path=str(manifest.absolute()),
                   manifest_extra=meta.extra, config=ExtractConfig(), progress=False)


def _train(store: Path, run: Path, settings: SmokeSettings) -> None:
    from femo.config import ModelConfig, TrainConfig
    from femo.training.loop import train

    model = ModelConfig(dim=64, temporal="mean", fusion="gated", embeddings=pick_embeddings(store))
    train(store, out=run, model=model, train=TrainConfig(epochs=settings.epochs, lr=settings.lr, seed=settings.seed, cache=True),
          fold=settings.fold, progress=False)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
