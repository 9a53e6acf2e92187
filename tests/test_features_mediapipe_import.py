"""``femo.features.mediapipe_tasks``: mediapipe's Tasks API without importing pyplot up front."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def run_fresh(code: str) -> str:
    """stdout of ``code`` in a fresh interpreter (the import state is per process)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pyplot_waits_for_first_use_and_then_behaves_as_imported():
    out = run_fresh("""
        import inspect, sys
        from femo.features import mediapipe_tasks
        BaseOptions, vision = mediapipe_tasks()
        assert hasattr(vision, "FaceLandmarker") and BaseOptions is not None
        plt = sys.modules["matplotlib.pyplot"]
        print(type(plt).__name__, "_real" in vars(plt))
        inspect.getmodule(inspect)  # scans every module's __file__: must not import pyplot
        print("_real" in vars(plt))
        import matplotlib, matplotlib.pyplot as again
        assert again is plt and matplotlib.pyplot is plt
        fig = plt.figure()  # first use: the real pyplot is imported
        print("_real" in vars(plt), type(sys.modules["matplotlib.pyplot"]).__name__)
        import matplotlib.pyplot as real
        assert real.figure is plt.figure and real.gcf() is fig
    """)
    assert out.splitlines() == ["_DeferredModule False", "False", "True module"]


def test_star_import_from_the_stand_in_gets_pyplot_names():
    out = run_fresh("""
        from femo.features import mediapipe_tasks
        mediapipe_tasks()
        from matplotlib.pyplot import *
        print(callable(figure), callable(subplots))
    """)
    assert out == "True True"


def test_pyplot_imported_first_is_left_alone():
    out = run_fresh("""
        import sys
        import matplotlib.pyplot
        from femo.features import mediapipe_tasks
        mediapipe_tasks()
        print(type(sys.modules["matplotlib.pyplot"]).__name__)
    """)
    assert out == "module"
