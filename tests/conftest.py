"""Fixtures shared by every test module.

``one_torch_thread`` (session-wide, automatic): the tests run tiny models, which only lose time to
thread hand-offs; one intra-op thread keeps them fast and their timings steady on a busy 2-core
machine. Test media are built by the one media module ``_media``; stores, runs and doubles by
``_synth_store`` and ``audit_doubles``, next to this file.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
