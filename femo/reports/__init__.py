"""The report notebooks' side of femo: the only package that imports papermill.

* :mod:`.execute`: run the notebooks with papermill into dated report folders, then the index page.
* :mod:`.notebooks`: find the notebooks, read and check their ``parameters`` cell, validate overrides.
* :mod:`.index`: the index page of a batch of reports, one row per notebook with its headline metrics.
* :mod:`.planted`: the index page's planted-truth panel (does each report find what the synthetic set planted?).
* :mod:`.demo`: where a notebook's data and trained run come from (building the cached smoke set).
* :mod:`.demo_kfold`: the k-fold smoke set of the label-quality report, cached the same way.
* :mod:`.describe`: what a store holds and lacks, in words; headline intervals and findings.
* :mod:`.figures`: figure helpers, the class palette, demographic column names and ``write_metrics``.
* :mod:`.privacy`: the ``privacy`` parameter: blurred faces, relative paths, pseudonymous clip ids.
* :mod:`.quiet`: keep the notebook kernels' noise off the terminal while reports run.
"""
