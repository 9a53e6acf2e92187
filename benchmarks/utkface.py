"""UTKFace validation of `femo annotate` and audit of the face pipeline per group.

Data: UTKFace crop_part1 (``--data``, default ../shared/data/utkface; skips with exit 0 when
absent): 9,778 aligned 200x200 faces with age, sex and race from the file names. Part 1 is
skewed (white 5,265, asian 1,553, indian 1,452, other 1,103, black 405; many young children) and
has no identity ids, so every interval below resamples images, not people.

Protocol, per image (``--per-race N`` draws N images of each race with seed ``--seed``, 0 = all):

1. Face pipeline, as ``femo extract`` / ``femo annotate`` run it: the mediapipe FaceLandmarker
   (``found``: one pass, no rescue; ``found_rescued``: plus femo's tile-search rescue) and the
   BlazeFace detector's best score (``face_score``, 0 when no face). Every image holds one face,
   so a miss is a miss.
2. Perceived age and sex with the face-api.js AgeGenderNet port on (a) femo's aligned crop of
   the found face (the ``femo annotate`` pipeline; images without a found face are excluded and
   counted) and (b) the dataset's own 200x200 crop (no face finding needed; all images).
3. ITA skin tone on the mesh's cheek/forehead region (found faces).

Metrics, overall and per race / age group / sex, with 95% percentile bootstrap intervals
(``--n-boot`` resamples of images): age MAE (years), age-group accuracy (UTKFace bins 0-12,
13-19, 20-39, 40-59, 60+, applied to the predicted age), sex accuracy; baselines measured on
the same images: the median age of the evaluated images for everyone (MAE), the most frequent
age group and the majority sex (accuracy). The face pipeline audit (found rate, detector score
per race / sex / age group, with permutation tests of the gap) is :func:`femo.audit.pipeline.pipeline_audit`.

Per-image results go to ``--work`` (default benchmarks/results/utkface_rows.csv, resumable:
rows already there are kept); the summary to benchmarks/results/utkface.json.

Usage: python benchmarks/utkface.py [--per-race 200] [--data DIR] [--n-boot 1000]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from femo.annotate.faces import FaceScorer, skin_columns
from femo.annotate.perceived import AGE_GROUPS, AgeSexEstimator, age_group
from femo.audit.pipeline import pipeline_audit
from femo.audit.stats import bootstrap_weights, percentile_interval
from femo.data.store import atomic_write_text
from femo.features.face import FaceTracker

ROOT = Path(__file__).resolve().parent.parent
SLICES = ("race", "age_group", "sex")


def measure(data: Path, rows: pd.DataFrame, tools: tuple, batch: int = 64) -> pd.DataFrame:
    """Per-image measurements (see the module docstring) for ``rows`` of the manifest."""
    plain, rescuer, scorer, estimator = tools
    out, crops, images, crop_rows = [], [], [], []
    for r in rows.itertuples(index=False):
        img = np.asarray(Image.open(data / r.path).convert("RGB"))
        track = plain.track(img[None])
        found = bool(track.face_found[0])
        if not found:
            track = rescuer.track(img[None])
        rec = {"image_id": r.image_id, "found": found, "found_rescued": bool(track.face_found[0]),
               "face_score": scorer.score(img)}
        if track.face_found[0]:
            rec.update(skin_columns([img], [track.landmarks_px[0]]))
            crops.append(track.faces[0])
            crop_rows.append(len(out))
        images.append(img)
        out.append(rec)
    age_i, fem_i = estimator.frames(np.stack(images))
    table = pd.DataFrame(out)
    table["age_image"], table["p_female_image"] = age_i, fem_i
    table["age_crop"], table["p_female_crop"] = np.nan, np.nan
    if crops:
        age_c, fem_c = estimator.frames(np.stack(crops))
        table.loc[crop_rows, "age_crop"], table.loc[crop_rows, "p_female_crop"] = age_c, fem_c
    return table


def run_measurements(data: Path, manifest: pd.DataFrame, work: Path, chunk: int = 200) -> pd.DataFrame:
    """Measure every manifest row not yet in ``work`` (CSV, rewritten atomically per chunk)."""
    done = pd.read_csv(work) if work.is_file() else pd.DataFrame()
    todo = manifest[~manifest["image_id"].isin(done.get("image_id", pd.Series(dtype=str)))]
    estimator = AgeSexEstimator()
    with FaceTracker(rescue=False) as plain, FaceTracker(rescue=True) as rescuer, FaceScorer() as scorer:
        bar = tqdm(total=len(todo), desc="utkface", unit="img")
        for start in range(0, len(todo), chunk):
            part = measure(data, todo.iloc[start:start + chunk], (plain, rescuer, scorer, estimator))
            done = pd.concat([done, part], ignore_index=True)
            atomic_write_text(work, done.to_csv(index=False))
            bar.update(len(part))
        bar.close()
    return manifest.merge(done, on="image_id", how="inner")


def interval(values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """Mean of ``values`` (N,) with a 95% percentile bootstrap interval over rows."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    w = bootstrap_weights(len(values), n_boot, np.random.default_rng(seed))  # (B, N)
    low, high = percentile_interval(w @ values / len(values), 0.95)
    return {"mean": float(values.mean()), "low": low, "high": high, "n": int(len(values))}


def accuracy_table(t: pd.DataFrame, source: str, n_boot: int, seed: int) -> pd.DataFrame:
    """Per slice: age MAE, age-group and sex accuracy of ``age_<source>`` / ``p_female_<source>``,
    each with its interval and its baseline on the same images."""
    t = t[t[f"age_{source}"].notna()]
    med_age = float(t["age"].median())
    top_group = t["age_group"].mode().iloc[0]
    top_sex = t["sex"].mode().iloc[0]
    err = (t[f"age_{source}"] - t["age"]).abs()
    group_hit = pd.Series(age_group(t[f"age_{source}"].to_numpy()) == t["age_group"].to_numpy(),
                          index=t.index, dtype=float)
    sex_hit = ((t[f"p_female_{source}"] >= 0.5).map({True: "female", False: "male"}) == t["sex"]).astype(float)
    base = {"age_mae": (t["age"] - med_age).abs(), "age_group_acc": (t["age_group"] == top_group).astype(float),
            "sex_acc": (t["sex"] == top_sex).astype(float)}
    rows = []
    for column in ("all", *SLICES):
        for name, idx in (t.groupby(column).groups.items() if column != "all" else [("all", t.index)]):
            row = {"slice": column, "group": name}
            for metric, values in (("age_mae", err), ("age_group_acc", group_hit), ("sex_acc", sex_hit)):
                ci = interval(values.loc[idx].to_numpy(), n_boot, seed)
                row.update({metric: ci["mean"], f"{metric}_low": ci["low"], f"{metric}_high": ci["high"],
                            f"{metric}_baseline": float(base[metric].loc[idx].mean())})
            row["n"] = len(idx)
            rows.append(row)
    return pd.DataFrame(rows)


def ita_table(t: pd.DataFrame) -> pd.DataFrame:
    """ITA per race (found faces): n, median and quartiles, share of each ITA category."""
    t = t[t["ita"].notna()]
    rows = []
    for race, g in t.groupby("race"):
        q = g["ita"].quantile([0.25, 0.5, 0.75])
        shares = g["ita_skin_tone"].value_counts(normalize=True)
        rows.append({"race": race, "n": len(g), "ita_q25": q[0.25], "ita_median": q[0.5], "ita_q75": q[0.75],
                     **{f"share_{c}": float(shares.get(c, 0.0)) for c in
                        ("very_light", "light", "intermediate", "tan", "brown", "dark")}})
    return pd.DataFrame(rows)


def _ci(row: dict, key: str, digits: int = 2) -> str:
    return f"{row[key]:.{digits}f} ({row[key + '_low']:.{digits}f}-{row[key + '_high']:.{digits}f})"


def markdown(crop: pd.DataFrame, audit_groups: pd.DataFrame, ita: pd.DataFrame, counts: dict,
             overall: dict[str, dict[str, float]]) -> str:
    """README table per race and age group: face pipeline, perceived age/sex (aligned crop), ITA.

    ``images`` counts every image of the group; the age/sex columns use those with a found face."""
    pipe = audit_groups.set_index(["attribute", "group", "measure"])
    ita = ita.set_index("race")
    lines = ["| group | images | face found | detector score | age MAE, years [baseline] | age group acc. [baseline] "
             "| sex acc. [baseline] | ITA median (IQR) |", "|---|---|---|---|---|---|---|---|"]
    for r in crop.to_dict("records"):
        if r["slice"] not in ("all", "race", "age_group"):
            continue
        key = (r["slice"], r["group"])
        found = pipe.loc[(*key, "found_rescued")] if key[0] != "all" else overall["found_rescued"]
        score = pipe.loc[(*key, "face_score")] if key[0] != "all" else overall["face_score"]
        cells = [f"{r['slice']} {r['group']}" if r["slice"] != "all" else "all",
                 str(sum(counts.values()) if found is overall["found_rescued"] else int(found["n_clips"])),
                 f"{found['mean']:.3f} ({found['low']:.3f}-{found['high']:.3f})",
                 f"{score['mean']:.3f} ({score['low']:.3f}-{score['high']:.3f})",
                 f"{_ci(r, 'age_mae', 1)} [{r['age_mae_baseline']:.1f}]",
                 f"{_ci(r, 'age_group_acc')} [{r['age_group_acc_baseline']:.2f}]",
                 f"{_ci(r, 'sex_acc')} [{r['sex_acc_baseline']:.2f}]",
                 (f"{ita.loc[r['group'], 'ita_median']:.0f} ({ita.loc[r['group'], 'ita_q25']:.0f} to "
                  f"{ita.loc[r['group'], 'ita_q75']:.0f})") if r["slice"] == "race" else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "utkface")
    ap.add_argument("--per-race", type=int, default=200, help="images per race (0 = all 9,778)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/utkface_rows.csv")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/utkface.json")
    args = ap.parse_args()
    if not (args.data / "manifest.csv").is_file():
        print(f"skip: {args.data / 'manifest.csv'} not found")
        return 0
    manifest = pd.read_csv(args.data / "manifest.csv", dtype={"image_id": str})
    if args.per_race:
        manifest = pd.concat([g.sample(n=min(len(g), args.per_race), random_state=args.seed)
                              for _, g in manifest.groupby("race")], ignore_index=True)
    t0 = time.time()
    t = run_measurements(args.data, manifest, args.work)
    print(f"{len(t)} images measured ({time.time() - t0:.0f} s this run); counts per race:",
          t["race"].value_counts().to_dict())
    audit = pipeline_audit(t.assign(found=t["found"].astype(float), found_rescued=t["found_rescued"].astype(float)),
                           attributes=list(SLICES), measures=["found", "found_rescued", "face_score"], cluster=None,
                           n_boot=args.n_boot, n_perm=args.n_boot, seed=args.seed)
    crop, image = (accuracy_table(t, s, args.n_boot, args.seed) for s in ("crop", "image"))
    ita = ita_table(t)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    for title, table in (("perceived age/sex on femo's aligned crop (found faces)", crop),
                         ("perceived age/sex on the dataset's crop (all images)", image), ("ITA per race", ita),
                         ("face pipeline per group", audit.groups), ("face pipeline gaps", audit.gaps)):
        print(f"\n== {title}\n{table.round(3).to_string(index=False)}")
    summary = {
        "protocol": __doc__, "n_images": int(len(t)), "per_race": args.per_race, "seed": args.seed,
        "n_boot": args.n_boot, "race_counts": t["race"].value_counts().to_dict(),
        "found_excluded_from_crop_metrics": int((~t["found_rescued"]).sum()), "age_groups": list(AGE_GROUPS),
        "perceived_on_aligned_crop": crop.to_dict("records"), "perceived_on_dataset_crop": image.to_dict("records"),
        "ita_per_race": ita.to_dict("records"), "pipeline": audit.to_metrics(),
        "pipeline_overall": {m: interval(t[m].astype(float).to_numpy(), args.n_boot, args.seed)
                             for m in ("found", "found_rescued", "face_score")},
    }
    print("\n== README table (annotate pipeline: femo's aligned crop)\n"
          + markdown(crop, audit.groups, ita, summary["race_counts"], summary["pipeline_overall"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(summary, indent=1, default=float) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
