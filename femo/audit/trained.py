"""Load a trained run for the model-level audits (ablation, attribution): the net from
``RUN/best.pt`` and the dataset split it was tested on, rebuilt exactly as training split it
(both through :class:`femo.training.runs.RunFolder`).
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
#: Largest relative difference between cached embeddings and the rebuilt encoder's output that
#: still counts as the same encoder (the cache is float16).
EMBEDDING_TOLERANCE = 0.02


class PixelFaceModel(torch.nn.Module):
    """A net trained on cached face embeddings, made to read face crops again.

    The frozen frame encoder that produced ``STORE/embeddings/<name>`` runs in front of the net:
    ``face`` (B, T, 3, S, S) in [0, 1] -> ``face_emb`` (B, T, D), zero where ``face_mask`` is
    False (as in the cache), so attributions can reach pixels. Batches that already carry
    ``face_emb`` go straight to the net.
    """

    def __init__(self, net: torch.nn.Module, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.encoder = net, encoder

    def forward(self, batch: dict) -> dict:
        if "face" not in batch:
            return self.net(batch)
        face, mask = batch["face"], batch["face_mask"]
        b, t = mask.shape
        emb = self.encoder(face.reshape(b * t, *face.shape[2:]).float()).reshape(b, t, -1)  # (B, T, D)
        inner = {k: v for k, v in batch.items() if k != "face"}
        inner["face_emb"] = emb * mask.unsqueeze(-1).to(emb.dtype)
        return self.net(inner)


@dataclass(frozen=True)
class TrainedRun:
    """A loaded run: ``model`` (eval mode, CPU unless asked), the ``dataset`` of one split,
    the run's ``classes`` and ``config`` (RUN/config.json), the ``store`` it reads, and the index
    rows of every split (``splits``: train / val / test); ``path`` is the run folder (for a k-fold
    run, the fold's) whose best.pt the model is."""

    model: torch.nn.Module
    dataset: torch.utils.data.Dataset
    classes: tuple[str, ...]
    config: dict
    store: Path
    splits: dict[str, pd.DataFrame]
    embeddings: str | None = None
    path: Path | None = None

    def split_dataset(self, split: str) -> torch.utils.data.Dataset:
        """A dataset over another split of the same store (e.g. ``train`` as a reference set)."""
        from femo.data.dataset import FeatureDataset

        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; choose from {list(self.splits)}")
        return FeatureDataset(self.store, index=self.splits[split], config=self.data_config, embeddings=self.embeddings)

    @property
    def data_config(self):
        """The run's :class:`femo.config.DataConfig` (frames, crop size, audio frames, classes)."""
        from femo.training.runs import data_config_of

        return data_config_of(self.config)

    @property
    def index(self) -> pd.DataFrame:
        """The dataset's index table: row ``i`` describes sample ``index == i``."""
        return self.dataset.index

    def pixels(self) -> TrainedRun:
        """This run reading face crops: itself when it already does, else a :class:`PixelFaceModel`
        around the encoder named in ``STORE/embeddings/<name>/meta.json`` with a crop dataset.

        Raises ValueError when the rebuilt encoder does not reproduce the cached embeddings of
        the first clip (e.g. an encoder whose weights are not on this machine).
        """
        if self.embeddings is None:
            return self
        from femo.models.frames import build_frame_encoder

        meta_file = self.store / "embeddings" / self.embeddings / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file}: missing; cannot tell which encoder made the embeddings")
        encoder = build_frame_encoder(json.loads(meta_file.read_text())["encoder"], freeze="frozen").eval()
        crops = dataclasses.replace(self, embeddings=None)
        crops = dataclasses.replace(crops, dataset=crops.split_dataset(self._split_of_dataset()))
        cached, sample = self.dataset[0], crops.dataset[0]
        with torch.no_grad():
            rebuilt = encoder(sample["face"].float()) * sample["face_mask"][:, None]
        err = float((rebuilt - cached["face_emb"].float()).abs().max() / cached["face_emb"].float().abs().max().clamp(min=1e-6))
        if err > EMBEDDING_TOLERANCE:
            raise ValueError(f"{meta_file}: the rebuilt encoder does not reproduce the cached embeddings "
                             f"(relative difference {err:.3f}); attribute the cached embeddings instead")
        return dataclasses.replace(crops, model=PixelFaceModel(self.model, encoder).eval())

    def _split_of_dataset(self) -> str:
        ids = list(self.dataset.index["clip_id"])
        return next(k for k, v in self.splits.items() if list(v["clip_id"]) == ids)

    def batches(self, *, batch_size: int = 8, max_clips: int | None = None,
                split: str | None = None) -> Iterator[dict]:
        """Sample-dict batches over the first ``max_clips`` clips (all when None), in order, of the
        loaded split (or of ``split``)."""
        ds = self.dataset if split is None else self.split_dataset(split)
        if max_clips is not None and max_clips < len(ds):
            ds = torch.utils.data.Subset(ds, range(max_clips))
        yield from DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)


def load_run(run: str | Path, *, store: str | Path | None = None, split: str = "test",
             device: str = "cpu") -> TrainedRun:
    """The run's best checkpoint and the ``split`` (train | val | test) of its store.

    store: default the store recorded in RUN/config.json. The split repeats the run's own
    (:meth:`femo.training.runs.RunFolder.split`: same fold, validation fraction and seed). Raises
    :class:`femo.training.runs.RunError` naming the file when the run is incomplete.
    """
    from femo.data.dataset import FeatureDataset
    from femo.training.runs import RunFolder, check_classes

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    folder = RunFolder(run)
    store = folder.store(store)
    model = folder.load_model(device=device)
    embeddings = model.config.embeddings
    parts = folder.split(store)
    splits = {name: parts[name] for name in SPLITS}
    dataset = FeatureDataset(store, index=splits[split], config=folder.data_config(), embeddings=embeddings)
    check_classes(folder.classes, dataset.classes, checkpoint=folder.best_path, store=store)
    return TrainedRun(model, dataset, folder.classes, folder.config, store, splits, embeddings, folder.path)
