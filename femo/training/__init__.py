"""Training and evaluation of :class:`femo.models.net.FemoNet` on a feature store.

* :mod:`.loop`: the training loop and the k-fold protocol (``train``, ``train_folds``: AdamW, schedule, resume, DDP).
* :mod:`.fold_workers`: the folds of a k-fold run trained side by side in spawned processes (``--fold-workers``).
* :mod:`.defaults`: what a bare ``femo train STORE --out RUN`` uses: the test protocol and the face path.
* :mod:`.evaluate`: a model on a dataset -> the run folder's ``predictions.csv`` and ``metrics.json``.
* :mod:`.cross`: cross-corpus evaluation: a run scored on a store whose class list differs (``femo evaluate``).
* :mod:`.metrics`: UAR, WAR, macro-F1, ECE and the one JSON writer.
* :mod:`.runs`: what a trained run is: :class:`~femo.training.runs.RunFolder`, the folder ``femo train`` writes.
* :mod:`.face_encoder`: train femo's face-expression encoder on an image manifest (``femo encoder``).
* :mod:`.face_augment`: batch augmentation of gray face images for the encoder's training.

Import the modules themselves (``from femo.training.loop import train``); this package imports
nothing at load time, so ``femo.training.metrics`` stays free of torch.
"""
