"""No test on a video whose label the pretraining used: the folds of an evaluation of a pretrained backbone.

Methods with a softened CE pretrain with the labels of some videos (:mod:`hico.train.labelled`, which writes
``RUNDIR/labelled_videos.json``). ``hico finetune``, ``hico probe``, the app's Evaluate page, the notebooks and
``bench/`` build their grouped, stratified folds as before (:func:`hico.data.splits.kfold_splits`), then, when
the evaluated videos are the pretraining's (the same resolved dataset folder; ``--classes`` subsets included),
constrain them (:func:`hico.data.splits.keep_in_training`):

- every video whose label the pretraining used, and every other video of its patient group, leaves the test
  folds and is in the training part of every fold (fine-tuning also keeps them out of its inner validation:
  they are trained on, never scored); every other video keeps its fold;
- ``label_overlap``: the number of evaluated videos whose labels the pretraining used. Each of them would have
  been a test video in one fold of the unconstrained k-fold (which tests every video once); it is kept in
  training instead, so no test video's label was seen;
- ``pretrained_on_test_videos``: the number of test videos (over all folds; a video is tested at most once)
  whose frames the pretraining trained on without their labels: ordinary self-supervision, allowed, counted;
- a fold left with no test video is an error (lower the number of folds).

Another dataset (a different folder) shares no video with the pretraining: both counts are 0 and the folds are
untouched, as for ``random`` and ``imagenet``. A weights file outside any run directory has no record: its
counts are None ("unknown") and the folds are untouched. ``keep_in_training`` adds video ids to keep out of the
test folds, e.g. another backbone's labelled videos, to compare two backbones on the same test videos.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hico.data.splits import keep_in_training
from hico.train.labelled import PretrainingRecord, read_record


@dataclass
class Guard:
    """What a pretraining saw of the evaluated videos, per video (all arrays (V,) bool, in the dataset's order).

    Attributes:
        spec: the backbone as named.
        record: the run's record, or None (``random``, ``imagenet``, a file outside a run directory).
        known: False for a weights file outside a run directory (what it saw is unknown).
        same_dataset: the evaluated folder is the pretraining's.
        labelled: videos whose labels a pretraining loss term used.
        pretrained: videos the pretraining trained on.
        keep: videos kept out of the test folds (``labelled`` and ``keep_in_training``), before adding the
            other videos of their patient groups.
    """

    spec: str
    record: PretrainingRecord | None
    known: bool
    same_dataset: bool
    labelled: np.ndarray
    pretrained: np.ndarray
    keep: np.ndarray

    def constrain(
        self, splits: list[tuple[np.ndarray, np.ndarray]], groups: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The folds with the kept videos' patient groups out of every test fold (see the module docstring).

        Raises:
            ValueError: a fold is left with no test video, naming the run and what to do.
        """
        try:
            return keep_in_training(splits, groups, self.keep)
        except ValueError as e:
            raise ValueError(f"{self.spec}: {e}") from None

    def report(self, splits: list[tuple[np.ndarray, np.ndarray]], ids: Iterable[str]) -> dict:
        """``label_overlap``, ``pretrained_on_test_videos`` (None when unknown), ``kept_in_training`` (ids of
        the videos in no test fold) and ``pretraining`` (run, dataset, same_dataset, source) for ``splits``."""
        ids = np.asarray(list(ids), dtype=object)
        tested = np.zeros(len(ids), dtype=bool)
        for _, test in splits:
            tested[test] = True
        record = self.record
        return {
            "label_overlap": int(self.labelled.sum()) if self.known else None,
            "pretrained_on_test_videos": int((self.pretrained & tested).sum()) if self.known else None,
            "kept_in_training": sorted(ids[~tested].tolist()),
            "pretraining": {
                "run": None if record is None else str(record.run),
                "dataset": None if record is None else str(record.dataset),
                "same_dataset": self.same_dataset,
                "source": _source(self.spec, record, self.known),
            },
        }


def guard(spec: str | Path, root: str | Path, ids: Iterable[str], keep_in_training: Iterable[str] = ()) -> Guard:
    """The :class:`Guard` of evaluating backbone ``spec`` on the videos ``ids`` of the dataset folder ``root``.

    Raises:
        ValueError: the run's record cannot be read (see :func:`hico.train.labelled.read_record`).
    """
    ids = list(ids)
    record = read_record(spec)
    known = record is not None or str(spec) in ("random", "imagenet")
    same = record is not None and Path(root).expanduser().resolve() == record.dataset
    labelled = np.array([same and i in record.labelled for i in ids], dtype=bool)
    pretrained = np.array([same and i in record.pretrained for i in ids], dtype=bool)
    extra = set(keep_in_training)
    keep = labelled | np.array([i in extra for i in ids], dtype=bool)
    return Guard(str(spec), record, known, same, labelled, pretrained, keep)


def _source(spec: str, record: PretrainingRecord | None, known: bool) -> str:
    if str(spec) in ("random", "imagenet"):
        return f"{spec} initialisation: no pretraining on these videos"
    if not known:
        return f"{spec} is not inside a pretraining run directory: what it was trained on is unknown"
    return record.source


def overlap_line(result: dict) -> str:
    """One line: how many evaluated videos' labels the pretraining used (kept in training) and how many test
    videos it trained on without labels, from a ``finetune`` or ``probe`` result."""
    n, p = result.get("label_overlap"), result.get("pretrained_on_test_videos")
    info = result.get("pretraining") or {}
    kept = len(result.get("kept_in_training", []))
    if n is None:
        return f"pretraining overlap: unknown ({info.get('source', 'no record')})"
    if info.get("run") and not info.get("same_dataset"):
        return f"pretraining overlap: none (pretrained on another dataset, {info.get('dataset')})"
    return (
        f"pretraining overlap: label_overlap {n} (videos whose labels the pretraining used, kept in training; "
        f"{kept} videos never tested), pretrained_on_test_videos {p} (test videos it trained on without labels)"
    )
