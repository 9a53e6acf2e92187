"""The `femo` command answers argument errors before importing torch (a typo costs no model load)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from femo.cli import COMMANDS

_PROBE = """
import json, sys, time
start = time.perf_counter()
from femo import cli
try:
    cli.main([{command!r}, "--bogus"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "seconds": time.perf_counter() - start,
                   "heavy": sorted(m for m in ("torch", "torchvision", "mediapipe", "papermill") if m in sys.modules)}}))
"""


def _probe(command: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE.format(command=command)], capture_output=True, text=True,
                          timeout=120)
    assert "unrecognized arguments: --bogus" in done.stderr or "required" in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_argument_error_imports_no_heavy_library(command: str) -> None:
    result = _probe(command)
    assert result["code"] == 2 and result["heavy"] == [], result


def test_train_typo_returns_well_under_a_second() -> None:
    result = _probe("train")
    assert result["seconds"] < 0.8, result  # torch alone takes several seconds to import here
