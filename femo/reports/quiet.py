"""Keep the notebook kernels' noise off the user's terminal while reports run.

* :func:`quiet_kernel_manager`: a jupyter kernel manager whose kernel process writes its own
  stderr (e.g. ipykernel's "Kernel is running over TCP without encryption" warning) nowhere;
  errors in cells still come back through the kernel's messages and fail the report.
* :class:`WarningFilter`: the file the notebooks' stderr streams are forwarded to; it drops
  Python warning lines (``path:line: SomeWarning: message`` and the source line after it, e.g.
  tqdm's ``TqdmWarning`` or setuptools' ``DeprecationWarning``) and passes everything else on.
* :func:`without_library_warnings`: a decorator silencing, while the function runs, the warnings
  that the notebook machinery itself raises in this process (nbformat's ``MissingIDFieldWarning``,
  jupyter_client's, papermill's): they are about our tooling, not the user's data.
"""
from __future__ import annotations

import functools
import re
import subprocess
import sys
import warnings
from typing import IO, Any, Callable

#: Packages whose own warnings are silenced while reports run (a regex on the warning's module).
_TOOLING = r"(nbformat|nbclient|nbconvert|papermill|jupyter_client|jupyter_core|traitlets|zmq)(\.|$)"

_WARNING = re.compile(r"\b[A-Z]\w*Warning: ")


def quiet_kernel_manager() -> type:
    """A subclass of jupyter_client's ``AsyncKernelManager`` launching kernels with stderr to devnull."""
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            kw["stderr"] = subprocess.DEVNULL
            await super()._async_launch_kernel(kernel_cmd, **kw)

    return QuietKernelManager


class WarningFilter:
    """A text stream wrapper that forwards to ``target`` (default ``sys.stderr``) all but warning lines."""

    def __init__(self, target: IO[str] | None = None) -> None:
        self.target = target or sys.stderr
        self._skip_source = False
        self._partial = ""

    def write(self, text: str) -> int:
        """Forward complete lines that are not warnings; keep a trailing partial line for later."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._emit(line + "\n")
        if "\r" in self._partial and not _WARNING.search(self._partial):  # a progress bar redrawing
            self.target.write(self._partial)
            self._partial = ""
        return len(text)

    def _emit(self, line: str) -> None:
        if _WARNING.search(line):
            self._skip_source = True  # the warnings module prints the offending source line next
            return
        if self._skip_source and line.startswith("  "):
            self._skip_source = False
            return
        self._skip_source = False
        self.target.write(line)

    def flush(self) -> None:
        """Write out a pending partial line (unless it is a warning) and flush the target."""
        if self._partial and not _WARNING.search(self._partial):
            self.target.write(self._partial)
        self._partial = ""
        self.target.flush()


def without_library_warnings(func: Callable) -> Callable:
    """Run ``func`` with the notebook tooling's warnings ignored (see the module docstring)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=_TOOLING)
            return func(*args, **kwargs)
    return wrapper
