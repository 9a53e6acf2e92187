"""`femo pipeline`: data -> manifest -> features -> embeddings -> training -> all reports (`make report`).

Stages run as the matching ``femo`` sub-commands in this process, inside ``--workdir``
(default ``runs/<tag>``). Without ``--data`` the data is the synthetic set with a planted bias
(``--plant-bias``, default ``skin_tone=dark``, recorded in the manifest sidecar); training runs
every fold (out-of-fold predictions of every clip, each fold's model scoring only its own test
fold) unless ``--fold K`` asks for one. The reports read the pooled out-of-fold results, and the
index page checks the planted truth.

Face path: on the synthetic set the face branch is a small CNN trained end to end on the face
crops with the rest of the net (:data:`DEMO_FACE`: ``crop_cnn``, every layer trained), so the
attribution report explains a face branch that learned from the pixels (not a fixed pretrained
encoder), and integrated gradients through it are cheap; the embeddings stage then does nothing. The
demo's store keeps 8 frames per clip and crops at that CNN's 48 px (:data:`DEMO_EXTRACT`). On real
data (``--data``) the face branch reads cached embeddings of the best installed pretrained
face encoder (femo.training.defaults.FACE_ENCODERS).

Caching by content: each finished stage is recorded in ``WORKDIR/stages.json`` with a key made
of its settings, the previous stage's key, a fingerprint of the femo sources it depends on and,
for the data stage, a content fingerprint of ``--data`` (femo.data.fingerprint: the manifest's
bytes and the size and time of every file it lists), never the folder name alone; a rerun says
which of these changed.
A stage whose key is unchanged is skipped, so a killed pipeline resumes where it stopped and a
second run only redoes the reports; a changed setting or source file redoes that stage and every
later one (``--force`` redoes all).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

STAGES: tuple[str, ...] = ("data", "features", "embeddings", "train", "reports")
#: femo sources each stage depends on (relative to the package; see femo.reports.demo).
STAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "data": ("data",), "features": ("data", "features", "assets.py"),
    "embeddings": ("models", "features/embed.py"), "train": ("models", "training", "config.py"),
}
DEFAULT_BIAS = "skin_tone=dark"
#: Frame encoder and freeze policy of the synthetic demo's face branch (femo.models.frames).
DEMO_FACE: tuple[str, str] = ("crop_cnn", "full")
#: Extraction settings of the synthetic demo (``femo extract --frames --face-size``): crops stored at
#: the side crop_cnn reads (femo.models.frames.CROP_CNN_SIZE, so no batch is resized) and 8 frames
#: per 2-second clip (4 per second), half the default 16: the demo's first run stays near 6 minutes.
DEMO_EXTRACT: tuple[str, ...] = ("--frames", "8", "--face-size", "48")
#: Report settings of the main job (the notebooks' stored defaults are smoke settings): attribution
#: of 5 clips per predicted emotion and at least 10 mouth-only clips (the planted-region check needs
#: 5 with a face mesh), 32 IG steps (median convergence delta well under 0.05 through the crop CNN),
#: and a randomisation cascade of one layer per step (the crop-CNN face path has 7 layers).
REPORT_SETTINGS: dict[str, object] = {"per_emotion": 5, "planted_clips": 10, "ig_steps": 32,
                                      "randomisation_clips": 4, "randomisation_steps": 8}


class StageError(RuntimeError):
    """A pipeline stage failed; the message names the stage and the command it ran."""


def _default_epochs() -> int:
    from femo.config import TrainConfig

    return TrainConfig().epochs


def _default_fold_workers() -> int:
    import os

    return max(1, min(os.cpu_count() or 1, 5))


def register(subparsers) -> None:
    """Add the ``pipeline`` sub-command."""
    p = subparsers.add_parser(
        "pipeline", help="synthetic (or real) data -> features -> training -> all reports",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="DFEW root (official layout) or a manifest CSV; default: synthetic")
    p.add_argument("--tag", default="demo", help="report tag and default workdir name (default: demo)")
    p.add_argument("--workdir", default=None, help="where data, store and run go (default: runs/<tag>)")
    p.add_argument("--clips", type=int, default=None, help="synthetic clips (default: femo synth's default)")
    p.add_argument("--seed", type=int, default=None,
                   help="synthetic data: femo synth's seed (default: its default); another seed draws other subjects and clips")
    p.add_argument("--plant-bias", default=DEFAULT_BIAS, metavar="COLUMN=VALUE",
                   help=f"synthetic data: subgroup made harder to read (default {DEFAULT_BIAS}; 'none' plants none)")
    p.add_argument("--epochs", type=int, default=_default_epochs(),
                   help=f"training epochs (default: TrainConfig's, {_default_epochs()})")
    p.add_argument("--fold", type=int, default=0,
                   help="test fold K of the 5-fold subject-independent split; 0 (default): every fold")
    p.add_argument("--workers", type=int, default=2, help="feature-extraction processes (default: 2)")
    p.add_argument("--embeddings", default="", metavar="NAME",
                   help="face embeddings on real data (default: the best installed face encoder's, of the aligned "
                        "crops); NAME@frame embeds the whole frame, for inputs that are face crops already "
                        "(FER2013), NAME@fallback where no face was found (femo.features.embed)")
    p.add_argument("--fold-workers", type=int, default=_default_fold_workers(),
                   help="folds trained side by side, also by the label-quality report's retraining "
                        f"(default: the CPU count up to 5, here {_default_fold_workers()})")
    p.add_argument("--reports-dir", default="reports", help="where report folders go (default: reports)")
    p.add_argument("--force", action="store_true", help="rerun finished stages")
    p.add_argument("--annotate", action="store_true",
                   help="bias report: add perceived age/sex and skin-tone estimates (`femo annotate`) and audit them")
    p.set_defaults(func=run)


def _femo(argv: list[str], *, ok: tuple[int, ...] = (0,)) -> None:
    """Run ``femo ARGV`` in this process; StageError unless its exit status is in ``ok``."""
    from femo import cli

    print(f"$ femo {' '.join(argv)}", flush=True)
    rc = cli.main(argv)
    if rc not in ok:
        raise StageError(f"`femo {' '.join(argv)}` exited with status {rc}")


def _bias(args: argparse.Namespace) -> list[str]:
    """``femo synth`` options planting the bias ([] for ``none``)."""
    return [] if args.plant_bias.lower() in ("", "none") else ["--plant-bias", args.plant_bias]


def _data_stage(args: argparse.Namespace, work: Path) -> Path:
    """Write or build the manifest; returns its path."""
    if not args.data:
        out = work / "data"
        seed = ["--seed", str(args.seed)] if args.seed is not None else []
        _femo(["synth", str(out)] + (["--clips", str(args.clips)] if args.clips else []) + seed + _bias(args))
        return out / "manifest.csv"
    source = Path(args.data).expanduser().resolve()
    if not source.exists():
        raise StageError(f"--data path not found: {source}")
    if source.is_file():
        return source
    if (source / "manifest.csv").is_file():
        return source / "manifest.csv"
    manifest = work / "manifest.csv"
    _femo(["manifest", "dfew", str(source), "--out", str(manifest)])
    return manifest


def _extract_options(args: argparse.Namespace) -> list[str]:
    """``femo extract`` options of the features stage: :data:`DEMO_EXTRACT` on synthetic data,
    none (the extraction defaults) on real data."""
    return [] if args.data else list(DEMO_EXTRACT)


def stage_inputs(args: argparse.Namespace) -> dict[str, dict]:
    """What each stage depends on: ``settings``, ``code`` (its femo sources' fingerprint), ``data``
    (content fingerprint of --data, femo.data.fingerprint; data stage only) and ``after`` (the
    previous stage's key), so a rerun can say which one changed."""
    from femo.data.fingerprint import data_fingerprint
    from femo.reports.demo import source_fingerprint

    face = [] if args.data else list(DEMO_FACE)
    settings = {"data": [args.data, args.clips, args.plant_bias if not args.data else "",
                         *([args.seed] if args.seed is not None and not args.data else [])],
                "features": [args.workers, *_extract_options(args)],
                "embeddings": face + ([args.embeddings] if args.embeddings and args.data else []),
                "train": [args.epochs, args.fold, args.fold_workers, *face]}
    inputs, previous = {}, ""
    for name in STAGES[:-1]:
        inputs[name] = {"settings": settings[name], "code": source_fingerprint(STAGE_SOURCES[name]),
                        "data": data_fingerprint(args.data) if name == "data" else "", "after": previous}
        previous = hashlib.sha256(json.dumps(inputs[name], sort_keys=True).encode()).hexdigest()[:12]
        inputs[name]["key"] = previous
    return inputs


def stage_keys(args: argparse.Namespace) -> dict[str, str]:
    """Content key per stage (12 hex digits) over :func:`stage_inputs`."""
    return {name: value["key"] for name, value in stage_inputs(args).items()}


_CHANGED = {"settings": "its settings changed", "code": "the femo code it runs changed",
            "data": "the content of --data changed", "after": "an earlier stage was redone"}


def rerun_reason(recorded: dict, inputs: dict) -> str:
    """Why a stage recorded as ``recorded`` (WORKDIR/stages.json) reruns with ``inputs``."""
    before = recorded.get("inputs")
    if not recorded:
        return "not run yet in this folder"
    if "seconds" not in recorded and recorded.get("key") == inputs.get("key"):
        return "resuming an interrupted run"
    if not before:
        return "recorded without its inputs"
    return "; ".join(_CHANGED[k] for k in _CHANGED if before.get(k) != inputs.get(k)) or "inputs changed"


def _stages(args: argparse.Namespace, work: Path, state: dict) -> dict[str, Callable[[bool], dict]]:
    """The stage functions; each takes ``clean``: True = outputs of other settings or code may be
    there and are removed first, False = resume an interrupted run of the same key."""
    store, run_dir = work / "store", work / "run"

    def data(clean: bool) -> dict:
        if clean and not args.data:
            shutil.rmtree(work / "data", ignore_errors=True)
        return {"manifest": str(_data_stage(args, work))}

    def features(clean: bool) -> dict:
        if clean:
            shutil.rmtree(store, ignore_errors=True)
        # Status 1 = some clips failed: they are recorded in the index and the rest go on.
        _femo(["extract", state["data"]["manifest"], "--out", str(store), "--workers", str(args.workers),
               *_extract_options(args)], ok=(0, 1))
        return {"store": str(store)}

    def embeddings(clean: bool) -> dict:
        if not args.data:
            print(f"synthetic data: the face branch is {DEMO_FACE[0]} trained on the crops; no embeddings to cache",
                  flush=True)
            return {"embeddings": ""}
        from femo.features.embed import cache_embeddings
        from femo.training.defaults import installed_face_encoder

        # the one asked for, else the best installed one (femo.training.defaults.FACE_ENCODERS)
        name = args.embeddings or installed_face_encoder()
        if name is None:
            print("no pretrained face encoder installed (`femo models fetch --face-weights`): "
                  "training leaves the face out", flush=True)
            return {"embeddings": ""}
        print(f"{name} embeddings -> {store / 'embeddings' / name}", flush=True)
        cache_embeddings(store, encoder=name, force=clean, progress=True)
        return {"embeddings": name}

    def train(clean: bool) -> dict:
        emb = state["embeddings"]["embeddings"]
        shutil.rmtree(run_dir, ignore_errors=True)  # fold runs resume nothing: train them afresh
        from femo.data.store import read_index

        # k-fold when the store has folds; else the dataset's own split (e.g. FER2013: train / val / test)
        has_folds = "fold" in read_index(store).columns
        which = ["--fold", str(args.fold)] if args.fold else (["--folds", "all"] if has_folds else [])
        if not args.data:  # the synthetic demo: a small CNN trained end to end on the crops
            face = ["--frame-encoder", DEMO_FACE[0], "--freeze", DEMO_FACE[1]]
        else:
            face = ["--embeddings", emb] if emb else ["--modalities", "landmarks,audio"]
        workers = ["--fold-workers", str(args.fold_workers)] if "--folds" in which else []
        _femo(["train", str(store), "--out", str(run_dir), *which, "--cache", *face, "--epochs", str(args.epochs),
               *workers])
        return {"run": str(run_dir)}

    def reports(clean: bool) -> dict:
        from femo.commands.report import summarize
        from femo.reports.execute import run_reports

        overrides = {**REPORT_SETTINGS, **({"annotate": True} if args.annotate else {})}
        found, index = run_reports(reports_dir=args.reports_dir, data=str(store), run_dir=str(run_dir),
                                   tag=args.tag, overrides=overrides)
        if summarize(found, index) != 0:
            raise StageError(f"some reports failed; see {index}")
        return {"index": str(index.resolve())}

    return {"data": data, "features": features, "embeddings": embeddings, "train": train, "reports": reports}


def _finish(state: dict, reports_dir: str) -> None:
    """Rewrite the index page with every stage's time, and print the times and the planted truth."""
    from femo.reports.index import collect, write_index
    from femo.reports.planted import planted_checks

    index = Path(state["reports"]["index"])
    seconds = {n: float(state[n]["seconds"]) for n in STAGES}
    print(f"stage times (s): {', '.join(f'{n} {s:.0f}' for n, s in seconds.items())}; "
          f"total {sum(seconds.values()) / 60:.1f} min")
    day, tag = index.parent.name[:10], index.parent.name[11:]  # REPORTS/<day>_<tag>/index.html
    if not (index.is_file() and index.parent.parent.resolve() == Path(reports_dir).resolve()):
        print(f"index page: {index}")
        return
    write_index(reports_dir, day=day, tag=tag, stages=seconds)
    checks = planted_checks(collect(Path(reports_dir), day=day, tag=tag))
    for check in checks or []:
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[check.passed]
        print(f"planted truth: {check.name}: {check.measured} -> {verdict}")
    print(f"index page: {index}")


def run(args: argparse.Namespace) -> int:
    """Run the stages whose content key changed, print the time of each and where the index page is."""
    from femo.reports.notebooks import ReportError, check_tag

    try:
        check_tag(args.tag)  # names report folders and the default workdir: refused before any stage runs
    except ReportError as exc:
        print(f"femo pipeline: {exc}", file=sys.stderr)
        return 2
    work = Path(args.workdir or Path("runs") / args.tag).resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "stages.json"
    state = {} if args.force or not state_path.is_file() else json.loads(state_path.read_text())
    inputs = stage_inputs(args)
    keys = {name: value["key"] for name, value in inputs.items()}
    stages = _stages(args, work, state)
    print(f"femo pipeline: working folder {work}; feature store {work / 'store'}; run folder {work / 'run'}",
          flush=True)
    for name in STAGES:
        recorded = state.get(name, {})
        if name != "reports" and recorded.get("key") == keys[name] and "seconds" in recorded:
            print(f"[{name}] done earlier with the same data, settings and code ({state[name]['seconds']:.0f} s); skipping",
                  flush=True)
            continue
        why = rerun_reason(recorded, inputs[name]) if name in inputs else "reports are always rerun"
        print(f"[{name}] starting ({why})", flush=True)
        clean = recorded.get("key") != keys.get(name, "")
        # started: a rerun with this key resumes
        state[name] = {"key": keys.get(name, ""), "inputs": inputs.get(name, {})}
        state_path.write_text(json.dumps(state, indent=2) + "\n")
        started = time.monotonic()
        try:
            result = stages[name](clean)
        except (StageError, ValueError, FileNotFoundError) as exc:
            print(f"femo pipeline: stage {name} failed: {exc}", file=sys.stderr)
            return 1
        state[name] = {**result, "seconds": round(time.monotonic() - started, 1), "key": keys.get(name, ""),
                       "inputs": inputs.get(name, {})}
        state_path.write_text(json.dumps(state, indent=2) + "\n")
        print(f"[{name}] finished in {state[name]['seconds']:.0f} s", flush=True)
    _finish(state, args.reports_dir)
    return 0
