"""femo.audit's curated interface: every entry point resolves, lazily."""
from __future__ import annotations

import subprocess
import sys

import pytest

import femo.audit


@pytest.mark.parametrize("name", femo.audit.__all__)
def test_entry_points_resolve_to_their_module(name: str) -> None:
    fn = getattr(femo.audit, name)
    assert callable(fn) and fn.__name__ == name and fn.__module__.startswith("femo.audit.")
    assert name in femo.audit.__doc__


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'shapley'"):
        femo.audit.shapley  # noqa: B018


def test_importing_the_package_loads_no_analysis() -> None:
    code = "import sys, femo.audit; print(sorted(m for m in ('captum', 'cleanlab', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
