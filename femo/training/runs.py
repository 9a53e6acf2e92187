"""What a trained run is: :class:`RunFolder`, the folder ``femo train --out RUN`` writes.

One run::

    RUN/config.json      model / train / data options, classes, store, fold, extraction settings,
                         seen_modalities (those some training clip had; the others are masked on load)
    RUN/best.pt          {"model": state_dict, "epoch", "config", "classes"} of the best epoch
    RUN/checkpoint.pt    the last epoch with optimiser, schedule and RNG state (for resume)
    RUN/history.csv      one row per epoch (train_loss, val_loss, val_uar, val_war, lr, seconds)
    RUN/metrics.json     test metrics of best.pt; RUN/predictions.csv one row per test clip

A k-fold run (``--folds all``) holds one such folder per fold, ``RUN/fold_<k>/``, plus the
fold-averaged ``RUN/metrics.json`` and all folds' ``RUN/predictions.csv``; :class:`RunFolder`
reads both layouts (:attr:`RunFolder.folds`).

The extraction settings (frames, face crop side, pose stride, pitch tracker, max frame side)
are recorded in ``config.json`` at training time, so inference never needs the store. Checkpoints
are read with ``weights_only=True``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from femo.config import DataConfig, ModelConfig, TrainConfig, from_dict

#: Extraction settings a run records (``RUN/config.json["extraction"]``).
EXTRACTION_KEYS: tuple[str, ...] = ("num_frames", "face_size", "pose_stride", "pitch", "max_side")


class RunError(ValueError):
    """The run folder is missing, incomplete, or not usable; the message names the path."""


class ClassMismatchError(RunError):
    """The checkpoint's classes differ from the run's config, its heads or the expected classes."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not fit the store/config; the message says which."""


class RunExistsError(RunError):
    """Training into a folder that already holds a run's weights, without resume or overwrite.

    ``path``: the run folder; ``finished``: True when it holds a tested model (metrics.json and a
    best.pt), False for an interrupted one (a checkpoint but no test metrics).
    """

    def __init__(self, path: Path, finished: bool) -> None:
        self.path, self.finished = Path(path), finished
        state = "a finished run" if finished else "an interrupted run"
        super().__init__(f"{path}: holds {state}; pass resume=True to continue it, overwrite=True to "
                         "replace it, or choose another output folder")


#: Files :func:`claim_run_folder` removes with ``overwrite`` (plus ``fold_<k>/`` holding them).
RUN_FILES: tuple[str, ...] = ("config.json", "checkpoint.pt", "best.pt", "history.csv", "metrics.json",
                              "predictions.csv")


def claim_run_folder(path: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Make ``path`` ready for a new run: refuse (:class:`RunExistsError`) a folder holding a run's
    weights (``best.pt`` / ``checkpoint.pt``, also in ``fold_<k>/``) unless ``resume`` or
    ``overwrite``; with ``overwrite`` (and not ``resume``) remove the old run's files only
    (:data:`RUN_FILES`, ``predictions_*.csv``, ``fold_<k>/``), never anything else in the folder."""
    path = Path(path)
    folds = [p for p in path.glob("fold_*") if p.is_dir() and p.name.split("_", 1)[1].isdigit()]
    holders = [path] + folds
    if resume or not any((d / n).is_file() for d in holders for n in ("best.pt", "checkpoint.pt")):
        return
    if not overwrite:
        finished = any((d / "metrics.json").is_file() and (d / "best.pt").is_file() for d in holders)
        raise RunExistsError(path, finished)
    import shutil

    for fold in folds:
        shutil.rmtree(fold)
    for name in (*RUN_FILES, *(p.name for p in path.glob("predictions_*.csv"))):
        (path / name).unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a femo checkpoint with ``weights_only=True``; a damaged file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a Python object: torch's advice would be unsafe
        raise CheckpointError(f"{path}: corrupt or not a femo checkpoint (it holds Python objects other than "
                              "tensors and plain values; femo never unpickles those, so it cannot be "
                              "loaded safely)") from None
    except Exception as exc:  # zip / truncation errors of a damaged or foreign file
        first = str(exc).strip().splitlines()[0].split(". ")[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: corrupt or not a femo checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or not {"model", "config", "classes"} <= set(ckpt):
        raise CheckpointError(f"{path}: not a femo checkpoint (expected keys model, config, classes)")
    return ckpt


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomic ``torch.save`` (temporary file then rename) so a kill never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def check_classes(ckpt_classes, store_classes, *, checkpoint: Path, store: Path) -> None:
    """Raise :class:`CheckpointError` naming both class lists when they differ."""
    if list(ckpt_classes) != list(store_classes):
        raise CheckpointError(f"classes of checkpoint {checkpoint} {list(ckpt_classes)} do not match "
                              f"classes of store {store} {list(store_classes)}")


def model_config_from(ckpt: dict) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint."""
    cfg = dict(ckpt["config"]["model"])
    cfg["modalities"] = tuple(cfg["modalities"])
    return from_dict(ModelConfig, cfg)


@dataclasses.dataclass(frozen=True)
class Split:
    """Index rows of the train / val / test clips of a store, and how many clips failed extraction."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    n_excluded: int

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r}; choose from ['train', 'val', 'test']")
        return getattr(self, name)


def split_index(store: str | Path, *, fold: int | None, val_fraction: float, seed: int) -> Split:
    """The :class:`Split` of the store's extracted clips used for training and testing.

    test = fold ``fold`` (or the ``split == test`` rows when None); val = ``val_fraction`` of the
    training subjects (subject-disjoint, drawn with ``seed``): :func:`femo.data.dataset.subject_split`.
    """
    from femo.data.dataset import subject_split
    from femo.data.store import ok_clips, read_index

    full = read_index(store)
    ok = ok_clips(full)
    train, val, test = subject_split(ok, fold=fold, val_fraction=val_fraction, seed=seed)
    return Split(train, val, test, int(len(full) - len(ok)))


def seen_modalities(index: pd.DataFrame) -> list[str]:
    """Modalities that at least one clip of ``index`` (store index rows, e.g. the training split)
    carries: ``face`` and ``landmarks`` when some clip has a face (``face_ratio`` > 0), ``audio``
    when some clip has an audio track (``has_audio``). Recorded as RUN/config.json
    ``seen_modalities``; the others are masked when the run is loaded (:meth:`RunFolder.load_model`)."""
    # An index without the column (older stores, hand-made test stores) says nothing: keep the modality.
    face = ("face_ratio" not in index.columns
            or bool((pd.to_numeric(index["face_ratio"], errors="coerce").fillna(0) > 0).any()))
    audio = ("has_audio" not in index.columns
             or bool(index["has_audio"].astype(str).str.lower().isin(["true", "1", "1.0"]).any()))
    return (["face", "landmarks"] if face else []) + (["audio"] if audio else [])


def data_config_of(config: dict[str, Any]) -> DataConfig:
    """The :class:`DataConfig` of a run's ``config.json`` contents (classes as a tuple)."""
    data = dict(config.get("data", {}))
    data["classes"] = tuple(data.get("classes", config["classes"]))
    return from_dict(DataConfig, data)


def _fold_number(path: Path) -> int:
    return int(path.name.split("_", 1)[1])


class RunFolder:
    """A trained run folder (see the module docstring); ``path`` need not exist until written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- layout -------------------------------------------------------------------------------
    @property
    def best_path(self) -> Path:
        """``RUN/best.pt``."""
        return self.path / "best.pt"

    @property
    def resume_path(self) -> Path:
        """``RUN/checkpoint.pt`` (last epoch, for ``resume=True``)."""
        return self.path / "checkpoint.pt"

    @property
    def folds(self) -> list[RunFolder]:
        """The ``fold_<k>`` sub-runs with a best.pt, by k; [] for a single run."""
        found = [p for p in self.path.glob("fold_*") if p.name.split("_", 1)[1].isdigit() and (p / "best.pt").is_file()]
        return [RunFolder(p) for p in sorted(found, key=_fold_number)]

    @property
    def is_kfold(self) -> bool:
        """True for a ``--folds all`` run (fold_<k>/ sub-runs and no best.pt of its own)."""
        return not self.best_path.is_file() and bool(self.folds)

    def fold(self, k: int) -> RunFolder:
        """The sub-run of fold ``k`` (``RUN/fold_<k>``)."""
        return RunFolder(self.path / f"fold_{k}")

    # ---- JSON / CSV ---------------------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        """``RUN/config.json``; :class:`RunError` naming the folder (and a fold to use) when missing."""
        if not self.path.is_dir():
            raise RunError(f"{self.path}: run folder not found")
        path = self.path / "config.json"
        if not path.is_file():
            folds, inner = self.folds, self.runs_inside()
            hint = (f"; this is a k-fold run: pass one fold, e.g. {folds[0].path}" if folds
                    else f"; did you mean {' or '.join(map(str, inner))}?" if inner
                    else "; train one with `femo train STORE --out RUN`")
            raise RunError(f"{self.path}: not a run folder (config.json missing){hint}")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: unreadable run config ({exc})") from exc

    def runs_inside(self) -> list[Path]:
        """Sub-folders one level down that are run folders (e.g. ``runs/demo/run`` of a pipeline
        workdir), at most three, for the "did you mean" hint of a folder that is not a run."""
        if not self.path.is_dir():
            return []
        found = sorted(p for p in self.path.iterdir() if p.is_dir() and ((p / "config.json").is_file()
                                                                          or RunFolder(p).is_kfold))
        return found[:3]

    def write_config(self, config: dict[str, Any]) -> Path:
        """Write ``RUN/config.json`` (and forget any cached copy)."""
        from femo.training.metrics import write_json

        self.__dict__.pop("config", None)
        return write_json(self.path / "config.json", config)

    def metrics(self) -> dict[str, Any]:
        """``RUN/metrics.json`` (for a k-fold run: the fold-averaged summary)."""
        path = self.path / "metrics.json"
        if not path.is_file():
            raise RunError(f"{path}: missing; the run has not been evaluated (`femo evaluate {self.path}`)")
        return json.loads(path.read_text())

    def history(self) -> pd.DataFrame:
        """``RUN/history.csv`` with a ``fold`` column (the run's test fold, None for a ``split``
        column); for a k-fold run every fold's rows."""
        if self.is_kfold:
            return pd.concat([f.history() for f in self.folds], ignore_index=True)
        path = self.path / "history.csv"
        if not path.is_file():
            raise RunError(f"{path}: missing; the run did not finish an epoch")
        return pd.read_csv(path).assign(fold=self.config.get("fold"))

    def predictions(self) -> pd.DataFrame:
        """``RUN/predictions.csv`` (clip_id and subject read as text); k-fold: all folds' test clips."""
        path = self.path / "predictions.csv"
        if not path.is_file():
            raise RunError(f"{path}: missing; the run has not been evaluated (`femo evaluate {self.path}`)")
        return pd.read_csv(path, dtype={"clip_id": str, "subject": str})

    # ---- settings -----------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in probability-column order."""
        return tuple(self.config["classes"])

    def store(self, override: str | Path | None = None) -> Path:
        """The feature store the run was trained on (``override`` when given)."""
        return Path(override or self.config["store"])

    def data_config(self) -> DataConfig:
        """The run's :class:`DataConfig` (frames, face size, audio frames, classes)."""
        return data_config_of(self.config)

    def train_config(self) -> TrainConfig:
        """The run's :class:`TrainConfig`."""
        return from_dict(TrainConfig, self.config.get("train", {}))

    @property
    def extraction(self) -> dict[str, Any]:
        """Extraction settings the model was trained on (:data:`EXTRACTION_KEYS`).

        Runs written before these were recorded get the extraction defaults at the run's data sizes.
        """
        from femo.features.clip import ExtractConfig

        data = self.data_config()
        defaults = dataclasses.asdict(ExtractConfig(num_frames=data.num_frames, face_size=data.face_size))
        recorded = self.config.get("extraction", {})
        return {k: recorded.get(k, defaults[k]) for k in EXTRACTION_KEYS}

    # ---- checkpoint and model -----------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """``RUN/best.pt`` (:func:`load_checkpoint`); :class:`RunError` when it was never written."""
        if not self.best_path.is_file():
            raise RunError(f"{self.best_path}: checkpoint missing; the run did not finish an epoch")
        return load_checkpoint(self.best_path)

    def model_config(self, ckpt: dict | None = None) -> ModelConfig:
        """The checkpoint's :class:`ModelConfig`, without ImageNet weights for ResNets (every
        weight is in the checkpoint, so no weight file needs to be found)."""
        cfg = model_config_from(ckpt or self.checkpoint())
        return dataclasses.replace(cfg, frame_weights=None) if cfg.frame_encoder.startswith("resnet") else cfg

    def load_model(self, *, classes=None, device: str | torch.device = "cpu",
                   frame_encoder: torch.nn.Module | None = None) -> torch.nn.Module:
        """best.pt as a :class:`femo.models.net.FemoNet` in eval mode on ``device``.

        classes: the expected class list (:class:`ClassMismatchError` when it differs). Raises
        :class:`RunError` / :class:`CheckpointError` naming the file and the problem.
        """
        from femo.models.net import FemoNet

        _ = self.config  # a missing folder or config.json is named before the checkpoint
        ckpt = self.checkpoint()
        names = self._check_classes(ckpt, classes)
        net = FemoNet(self.model_config(ckpt), len(names), frame_encoder=frame_encoder)
        try:
            net.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{self.best_path}: weights do not fit the model in its config ({exc})") from exc
        net.absent_modalities = self.unseen_modalities
        return net.to(device).eval()

    @property
    def unseen_modalities(self) -> tuple[str, ...]:
        """The model's modalities that no training clip had (RUN/config.json ``seen_modalities``;
        () for runs that did not record it): their branches are untrained, so loading masks them."""
        seen = self.config.get("seen_modalities")
        if seen is None:
            return ()
        return tuple(m for m in self.config.get("model", {}).get("modalities", ()) if m not in seen)

    def _check_classes(self, ckpt: dict, expected) -> tuple[str, ...]:
        classes = tuple(ckpt["classes"])
        if "classes" in self.config and list(self.config["classes"]) != list(classes):
            raise ClassMismatchError(f"{self.best_path}: trained with classes {list(classes)} but "
                                     f"{self.path / 'config.json'} lists {list(self.config['classes'])}; "
                                     "the checkpoint belongs to another run")
        heads = {k: v.shape[0] for k, v in ckpt["model"].items() if k.startswith("heads.") and k.endswith(".weight")}
        if any(n != len(classes) for n in heads.values()):
            raise ClassMismatchError(f"{self.best_path}: output layers have {sorted(set(heads.values()))} classes "
                                     f"but the checkpoint lists {len(classes)} {list(classes)}")
        if expected is not None and list(expected) != list(classes):
            raise ClassMismatchError(f"{self.best_path}: trained with classes {list(classes)}, "
                                     f"expected {list(expected)}")
        return classes

    # ---- the split ----------------------------------------------------------------------------
    def split(self, store: str | Path | None = None) -> Split:
        """The :class:`Split` of ``store`` (default: the run's store) exactly as training made it:
        same fold, validation fraction and seed, and without the clips training left out of its
        training split (``dropped_from_training``, ``--drop-suspects``)."""
        cfg = self.train_config()
        split = split_index(self.store(store), fold=self.config.get("fold"), val_fraction=cfg.val_fraction,
                            seed=cfg.seed)
        dropped = set(map(str, self.config.get("dropped_from_training") or ()))
        if not dropped:
            return split
        kept = ~split.train["clip_id"].astype(str).isin(dropped)
        return dataclasses.replace(split, train=split.train[kept].reset_index(drop=True))
