"""The probe by the user's labels (models.probe.label_probe): with labels on enough held-out items, training picks
its checkpoint and the safeguard judges against ITQ by them, not by cluster pseudo-labels."""

from __future__ import annotations

import numpy as np
from hamdex.models.probe import LABEL_PROBE_MIN_QUERIES, label_probe
from hamdex.models.train import TrainConfig, fit_hasher
from sklearn.datasets import load_digits


def test_label_probe_ranks_by_the_labelled_rows_only():
    labels = np.full(400, -1, dtype=np.int64)
    labels[::2] = np.arange(200) % 3  # every other row labelled
    queries, database = np.arange(0, 200), np.arange(200, 400)
    probe = label_probe(labels, queries, database)
    assert probe is not None and probe.kind == "labels"
    assert (labels[probe.queries] >= 0).all() and (labels[probe.database] >= 0).all()
    assert len(probe.queries) == 100 and len(probe.database) == 100
    assert np.array_equal(probe.labels, labels[probe.rows])
    # codes that are the class itself score a perfect mAP
    codes = probe.labels.astype(np.uint8)[:, None]
    assert probe.score(codes).map == 1.0


def test_too_few_labelled_queries_leave_the_cluster_probe():
    labels = np.full(400, -1, dtype=np.int64)
    labels[200:] = np.arange(200) % 3  # the database is labelled, the held-out rows are not
    labels[: LABEL_PROBE_MIN_QUERIES - 1] = 0
    assert label_probe(labels, np.arange(200), np.arange(200, 400)) is None


def test_training_with_labels_is_judged_by_them():
    d = load_digits()
    images = (d.images * 255 / 16).astype(np.uint8)
    cfg = TrainConfig(epochs=3, progress=False, safeguard=True, device="cpu")
    model = {"n_bits": 16, "hidden": (64,)}
    labelled, _ = fit_hasher(images, "pixels", model, cfg, labels=[str(t) for t in d.target])
    report = labelled.info["report"]
    assert report["validation"]["signal"] == "label mAP"
    itq = report["safeguard"]["candidates"]["itq"]["probe_map"]
    # by the digits' own classes ITQ's codes score far above the 0.1 of chance
    assert itq > 0.3
    few = [str(t) if i % 50 == 0 else None for i, t in enumerate(d.target)]  # ~18 labelled held-out items
    unlabelled, _ = fit_hasher(images, "pixels", model, cfg, labels=few)
    assert unlabelled.info["report"]["validation"]["signal"] == "probe mAP"
