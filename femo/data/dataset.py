"""A torch ``Dataset`` over a feature store, and subject-disjoint splits.

Each item is the sample dict documented in docs/ARCHITECTURE.md ("Sample dicts"):
``face`` (T, 3, S, S) float in [0, 1] (or ``face_emb`` (T, D) with cached embeddings), ``face_mask``
(T,) bool, ``landmarks`` (T, G) float32, ``landmarks_mask`` (T,) bool, ``audio`` (1, 64, A) float32,
``prosody`` (A, 4) float32, ``audio_mask`` () bool, ``label`` () int64, ``votes`` (C,) float32 and
``index`` () int64 (row of :attr:`FeatureDataset.index`); stores extracted with openSMILE
functionals add ``functionals`` (F,) float32 (raw values; zeros without audio).

``audio_mask`` is False for clips without an audio track and for digital silence (a log-mel all
at the -80 dB floor): missing audio is a mask, never a silent spectrogram the model must learn.
With ``DataConfig.speaker_norm`` the log-mel, f0 and functionals of each speaker are z-scored
with that speaker's own statistics (:mod:`femo.data.speaker_norm`; transductive for test speakers).

Audio normalisation: log-mel dB (0 dB = clip maximum) becomes ``(dB + 40) / 40`` clipped to
[-1, 1]; prosody columns become ``log2(f0 / 200)`` (0 when unvoiced), voiced probability, RMS
energy divided by the clip's maximum, voiced flag. Both are linearly resampled to A time steps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from femo.config import MODALITIES, DataConfig
from femo.data.store import STATUS_OK, StoreError, clip_file, read_index, read_meta
from femo.features.geometry import geometry_vector


def vote_columns(index: pd.DataFrame, classes: tuple[str, ...]) -> list[str]:
    """The ``vote_<class>`` columns present in ``index`` (all of them or none)."""
    cols = [f"vote_{c}" for c in classes]
    return cols if all(c in index.columns for c in cols) else []


def _resample_time(x: np.ndarray, length: int) -> np.ndarray:
    """Linearly resample the last axis of ``x`` (..., N) to ``length`` steps; N == 0 gives zeros."""
    n = x.shape[-1]
    if n == 0:
        return np.zeros((*x.shape[:-1], length), np.float32)
    if n == length:
        return x.astype(np.float32)
    src = np.linspace(0.0, n - 1, length)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).astype(np.float32)
    return (x[..., lo] * (1 - frac) + x[..., hi] * frac).astype(np.float32)


def face_inputs(faces: np.ndarray, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 face crops -> (N, 3, size, size) float in [0, 1] (bilinear resize when
    S != size); training and inference both prepare crops through this function."""
    x = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def audio_inputs(logmel: np.ndarray, prosody: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(64, N) dB log-mel and (N, 4) prosody -> normalised (1, 64, frames) and (frames, 4)."""
    mel = np.clip((np.nan_to_num(logmel, nan=-80.0) + 40.0) / 40.0, -1.0, 1.0)
    pro = np.nan_to_num(np.asarray(prosody, np.float32)).copy()
    if len(pro):
        f0 = pro[:, 0]
        pro[:, 0] = np.where(f0 > 0, np.log2(np.maximum(f0, 1e-3) / 200.0), 0.0)
        pro[:, 2] = pro[:, 2] / max(float(pro[:, 2].max()), 1e-8)
    return _resample_time(mel, frames)[None], _resample_time(pro.T, frames).T.copy()


_KEYS = ("faces", "face_found", "landmarks", "blendshapes", "head_pose", "pose", "pose_found", "logmel",
         "prosody", "has_audio")


class FeatureDataset(Dataset):
    """Sample dicts read from the feature store ``store``.

    index: subset of the store's index (e.g. one split); default = the whole index. Clips whose
    ``status`` is not ``ok`` are dropped and counted in :attr:`n_excluded`. embeddings: name of
    cached frame embeddings (``STORE/embeddings/<name>/<clip_id>.npy``, (T, D) float16) used
    instead of face crops. augment: random horizontal flip and brightness jitter of face crops
    (drawn from torch's global RNG, so seeded runs stay reproducible); no effect on embeddings.
    cache: keep every decoded sample in memory after its first read (before augmentation); worth
    it for cached embeddings, costly for raw faces (T * 3 * S * S * 4 bytes per clip). Each
    DataLoader worker process holds its own cache, so it pays off with ``num_workers=0``.
    modalities: the modalities a model reads (default all of ``MODALITIES``); the ``face`` /
    ``face_emb`` and ``landmarks`` tensors of the others are left out of the samples (their masks
    stay), so an audio-only model does not decode and batch (T, 3, S, S) zeros for every clip.
    """

    def __init__(self, store: str | Path, *, index: pd.DataFrame | None = None,
                 config: DataConfig = DataConfig(), embeddings: str | None = None,
                 augment: bool = False, cache: bool = False, modalities: tuple[str, ...] | None = None) -> None:
        self.store = Path(store)
        self.modalities = tuple(modalities or MODALITIES)
        self.meta = read_meta(self.store)
        self.classes: tuple[str, ...] = tuple(self.meta.classes)
        table = read_index(self.store) if index is None else index
        ok = table["status"].astype(str) == STATUS_OK
        self.n_excluded = int((~ok).sum())
        self.index = table[ok].reset_index(drop=True)
        unknown = sorted(set(self.index["label"].astype(str)) - set(self.classes))
        if unknown:
            raise StoreError(f"{self.store}: labels {unknown} are not among the store's classes {list(self.classes)}")
        self.labels = np.array([self.classes.index(str(x)) for x in self.index["label"]], np.int64)
        self.votes = self._votes()
        self.config = config
        self.embeddings = embeddings
        self.augment = augment
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None
        self.functionals_dim = int(self.meta.extra.get("extraction", {}).get("functionals_dim", 0) or 0)
        self._speakers: dict[str, object] | None = None
        if config.speaker_norm and "subject" not in self.index.columns:
            raise StoreError(f"{self.store}: speaker_norm needs a 'subject' column in the index")

    def _votes(self) -> np.ndarray:
        """(N, C) float32 vote distributions; one-hot where there are no (or zero) votes."""
        onehot = np.eye(len(self.classes), dtype=np.float32)[self.labels]
        cols = vote_columns(self.index, self.classes)
        if not cols:
            return onehot
        counts = self.index[cols].to_numpy(np.float32, na_value=0.0)
        total = counts.sum(axis=1, keepdims=True)
        return np.where(total > 0, counts / np.maximum(total, 1e-8), onehot).astype(np.float32)

    @property
    def has_votes(self) -> bool:
        """True when the index carries ``vote_<class>`` columns for every class."""
        return bool(vote_columns(self.index, self.classes))

    def __len__(self) -> int:
        return len(self.index)

    def embedding_file(self, clip_id: str) -> Path:
        """Where the cached embedding of ``clip_id`` lives."""
        return self.store / "embeddings" / str(self.embeddings) / f"{clip_id}.npy"

    def embedding_dim(self) -> int:
        """D of the cached embeddings (read from the first clip)."""
        return int(self._face_emb(str(self.index["clip_id"].iloc[0])).shape[1])

    def _face_emb(self, clip_id: str) -> np.ndarray:
        path = self.embedding_file(clip_id)
        if not path.is_file():
            raise StoreError(f"{path}: cached embedding missing; create them with "
                             f"femo.features.embed.cache_embeddings({str(self.store)!r}, encoder=...) or "
                             f"`femo extract ... --embed {self.embeddings}`")
        arr = np.load(path, allow_pickle=False).astype(np.float32)
        if arr.ndim != 2:
            raise StoreError(f"{path}: expected a (T, D) array, got shape {arr.shape}")
        return np.nan_to_num(arr)

    def _emb_mask(self, clip_id: str, rows: int) -> np.ndarray | None:
        """The (T,) face mask of a ``frame`` / ``fallback`` embedding (``<clip_id>.mask.npy``;
        :mod:`femo.features.embed`), None for a crop embedding (the clip's ``face_found``)."""
        path = self.embedding_file(clip_id).with_suffix(".mask.npy")
        if not path.is_file():
            if "@" in str(self.embeddings) and not str(self.embeddings).endswith("@crop"):
                raise StoreError(f"{path}: face mask of embedding {self.embeddings!r} missing; rerun "
                                 f"`femo extract ... --embed {self.embeddings}` to complete it")
            return None
        mask = np.load(path, allow_pickle=False).astype(bool).reshape(-1)
        if len(mask) != rows:
            raise StoreError(f"{path}: {len(mask)} mask rows for {rows} embedding rows")
        return mask

    def _frames(self, n: int) -> np.ndarray:
        """Indices of config.num_frames frames out of the stored n (uniform; repeats if n is short)."""
        t = self.config.num_frames
        return np.arange(n) if n == t else np.floor(np.arange(t) * n / t).astype(int)

    def _faces(self, faces: np.ndarray) -> torch.Tensor:
        return face_inputs(faces, self.config.face_size)

    @staticmethod
    def _augment(x: torch.Tensor) -> torch.Tensor:
        """Random horizontal flip and brightness factor in [0.8, 1.2] of (T, 3, S, S) crops."""
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return (x * (0.8 + 0.4 * torch.rand(()))).clamp(0.0, 1.0)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._cache is not None and i in self._cache:
            sample = dict(self._cache[i])
        else:
            sample = self._load(i)
            if self._cache is not None:
                self._cache[i] = dict(sample)
        if self.augment and "face" in sample:
            sample["face"] = self._augment(sample["face"])
        return sample

    def _audio(self, z: dict[str, np.ndarray], i: int) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
        """Audio arrays of row ``i`` (see :func:`_audio_arrays`), speaker-normalised when configured."""
        has_audio, mel, pro, func = _audio_arrays(z, self.config.audio_frames)
        if has_audio and self.config.speaker_norm:
            from femo.data.speaker_norm import normalise

            stats = self.speaker_stats()[str(self.index["subject"].iloc[i])]
            m, pro, func = normalise(stats, mel[0], pro, func)
            mel = m[None]
        return has_audio, mel, pro, func

    def speaker_stats(self) -> dict[str, object]:
        """``{subject: SpeakerStats}`` from each subject's own clips with audio in this dataset's
        index (computed on first use by reading those clips once; labels are not used)."""
        if self._speakers is None:
            from femo.data.speaker_norm import speaker_stats

            parts: dict[str, tuple[list, list, list]] = {}
            for clip_id, subject in zip(self.index["clip_id"].astype(str), self.index["subject"].astype(str),
                                        strict=True):
                has_audio, mel, pro, func = _audio_arrays(self._read_audio(clip_id), self.config.audio_frames)
                lists = parts.setdefault(subject, ([], [], []))
                if has_audio:
                    for lst, x in zip(lists, (mel[0], pro, func), strict=True):
                        lst.append(x)
            self._speakers = {s: speaker_stats(*lists) for s, lists in parts.items()}
        return self._speakers

    def _read_audio(self, clip_id: str) -> dict[str, np.ndarray]:
        path = clip_file(self.store, clip_id)
        keys = ["has_audio", "logmel", "prosody"] + (["functionals"] if self.functionals_dim else [])
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in keys}
        except Exception as exc:  # missing, damaged or key-less file
            raise StoreError(f"{path}: cannot read the audio arrays ({type(exc).__name__}: {exc})") from exc

    def _read(self, clip_id: str) -> dict[str, np.ndarray]:
        """The arrays a sample needs (face crops only without cached embeddings), decompressed lazily."""
        keys = [k for k in _KEYS if k != "faces" or (not self.embeddings and "face" in self.modalities)]
        keys += ["functionals"] if self.functionals_dim else []
        path = clip_file(self.store, clip_id)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in keys}
        except FileNotFoundError:
            raise StoreError(f"{path}: clip file missing from the store") from None
        except KeyError as exc:
            raise StoreError(f"{path}: clip file lacks key {exc}") from None
        except Exception as exc:  # zipfile/zlib errors of a damaged file
            raise StoreError(f"{path}: unreadable clip file ({exc})") from exc

    def _load(self, i: int) -> dict[str, torch.Tensor]:
        clip_id = str(self.index["clip_id"].iloc[i])
        z = self._read(clip_id)
        sel = self._frames(len(z["face_found"]))
        face_found = z["face_found"].astype(bool)[sel]
        pose_found = z["pose_found"].astype(bool)[sel]
        has_audio, mel, pro, func = self._audio(z, i)
        sample = {
            "face_mask": torch.from_numpy(face_found.copy()),
            "landmarks_mask": torch.from_numpy(face_found | pose_found),
            "audio": torch.from_numpy(mel if has_audio else np.zeros_like(mel)),
            "prosody": torch.from_numpy(pro if has_audio else np.zeros_like(pro)),
            "audio_mask": torch.tensor(has_audio),
            "label": torch.tensor(self.labels[i]),
            "votes": torch.from_numpy(self.votes[i]),
            "index": torch.tensor(i, dtype=torch.int64),
        }
        if self.functionals_dim:
            sample["functionals"] = torch.from_numpy(func if has_audio else np.zeros_like(func))
        if "landmarks" in self.modalities:
            sample["landmarks"] = torch.from_numpy(geometry_vector(
                z["landmarks"][sel], z["blendshapes"][sel], z["head_pose"][sel], z["pose"][sel], pose_found,
                face_found))
        if "face" not in self.modalities:
            return sample
        if self.embeddings:
            emb = self._face_emb(clip_id)
            sample["face_emb"] = torch.from_numpy(emb[self._frames(len(emb))])
            mask = self._emb_mask(clip_id, len(emb))
            if mask is not None:  # a frame / fallback embedding: its own face mask
                sample["face_mask"] = torch.from_numpy(mask[self._frames(len(mask))].copy())
        else:
            sample["face"] = self._faces(z["faces"][sel])
        return sample


def _audio_arrays(z: dict[str, np.ndarray], frames: int) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """(audio present, (1, 64, frames) log-mel, (frames, 4) prosody, (F,) functionals) of one clip."""
    logmel = z["logmel"]
    has_audio = bool(z["has_audio"]) and logmel.shape[-1] > 0 and float(logmel.max()) > -80.0
    mel, pro = audio_inputs(logmel, z["prosody"], frames)
    func = np.nan_to_num(np.asarray(z.get("functionals", np.zeros(0)), np.float32).reshape(-1))
    return has_audio, mel, pro, func


def subject_split(index: pd.DataFrame, *, fold: int | None = None, val_fraction: float = 0.15,
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split ``index`` into (train, val, test) DataFrames.

    test: rows whose ``fold`` equals ``fold`` or, with ``fold=None``, rows whose ``split`` is
    ``test``. validation: whole subjects drawn (seeded) from the remaining training rows until
    about ``val_fraction`` of them are held out, so model selection never sees the test fold and
    validation subjects never appear in training. Train and test follow the dataset's protocol; with
    ``fold=None`` and ``split == val`` rows (an official validation split, e.g. FER2013's
    public_test) those rows are the validation split.
    """
    if fold is not None:
        if "fold" not in index.columns:
            raise ValueError(f"fold={fold} requested but the index has no 'fold' column")
        is_test = index["fold"].astype(int) == int(fold)
    elif "split" in index.columns:
        is_test = index["split"].astype(str) == "test"
    else:
        raise ValueError("the index has no 'split' column; pass fold=K (columns: "
                         f"{list(index.columns)[:12]}...)")
    if not is_test.any():
        raise ValueError(f"no test rows for fold={fold} (split column used: {fold is None})")
    test = index[is_test].reset_index(drop=True)
    rest = index[~is_test].reset_index(drop=True)
    if fold is None and (rest["split"].astype(str) == "val").any():  # the dataset's own validation split
        is_val = rest["split"].astype(str) == "val"
        return rest[~is_val].reset_index(drop=True), rest[is_val].reset_index(drop=True), test
    subjects = rest["subject"].astype(str)
    unique = np.array(sorted(subjects.unique()))
    if len(unique) < 2:
        raise ValueError(f"need at least 2 training subjects to carve a validation split, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(unique)
    counts = subjects.value_counts()
    target = max(1.0, val_fraction * len(rest))
    chosen, total = [], 0
    for s in order[:-1]:  # the last subject always stays in training
        if total >= target:
            break
        chosen.append(s)
        total += int(counts[s])
    is_val = subjects.isin(chosen)
    return rest[~is_val].reset_index(drop=True), rest[is_val].reset_index(drop=True), test
