"""Load a trained run for the model-level audits (ablation, attribution): the net from
``RUN/best.pt`` and the dataset split it was tested on, rebuilt exactly as ``femo.train`` split it.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class TrainedRun:
    """A loaded run: ``model`` (eval mode, CPU unless asked), the ``dataset`` of one split,
    the run's ``classes`` and ``config`` (RUN/config.json), and the ``store`` it reads."""

    model: torch.nn.Module
    dataset: torch.utils.data.Dataset
    classes: tuple[str, ...]
    config: dict
    store: Path

    @property
    def index(self) -> pd.DataFrame:
        """The dataset's index table: row ``i`` describes sample ``index == i``."""
        return self.dataset.index

    def batches(self, *, batch_size: int = 8, max_clips: int | None = None) -> Iterator[dict]:
        """Sample-dict batches over the first ``max_clips`` clips (all when None), in order."""
        ds = self.dataset
        if max_clips is not None and max_clips < len(ds):
            ds = torch.utils.data.Subset(ds, range(max_clips))
        yield from DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)


def load_run(run: str | Path, *, store: str | Path | None = None, split: str = "test",
             device: str = "cpu") -> TrainedRun:
    """The run's best checkpoint and the ``split`` (train | val | test) of its store.

    store: default the store recorded in RUN/config.json. The split repeats the run's own
    ``subject_split`` (same fold, validation fraction and seed). Raises ``FileNotFoundError``
    naming the file when the run is incomplete.
    """
    from femo.config import DataConfig, from_dict
    from femo.data.dataset import FeatureDataset, subject_split
    from femo.data.store import ok_clips, read_index
    from femo.models.net import FemoNet
    from femo.train import check_classes, load_checkpoint, model_config_from

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    run = Path(run)
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run / 'config.json'}: not a run folder; train one with `femo train STORE --out RUN`")
    config = json.loads((run / "config.json").read_text())
    store = Path(store or config["store"])
    ckpt = load_checkpoint(run / "best.pt")
    model_cfg = model_config_from(ckpt)
    if model_cfg.frame_encoder.startswith("resnet"):
        # the checkpoint holds every weight: no need to look for the ImageNet file
        model_cfg = dataclasses.replace(model_cfg, frame_weights=None)
    model = FemoNet(model_cfg, len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    data = from_dict(DataConfig, {**config["data"], "classes": tuple(config["data"]["classes"])})
    index = ok_clips(read_index(store))
    parts = subject_split(index, fold=config.get("fold"), val_fraction=config["train"].get("val_fraction", 0.15),
                          seed=config["train"].get("seed", 0))
    dataset = FeatureDataset(store, index=parts[SPLITS.index(split)], config=data, embeddings=model_cfg.embeddings)
    check_classes(ckpt["classes"], dataset.classes, checkpoint=run / "best.pt", store=store)
    return TrainedRun(model, dataset, tuple(ckpt["classes"]), config, store)
