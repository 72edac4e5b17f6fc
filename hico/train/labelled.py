"""Which videos a pretraining run trained on, and whose labels its loss used: ``RUNDIR/labelled_videos.json``.

Methods with a softened cross-entropy (``hico``, ``hico-code``, ``uscl``, the ablation rows with ``soft_ce``)
use the labels of ``data.label_rate`` of the training videos. An evaluation of that run's backbone on the same
videos must not test on them (their labels shaped the backbone), so every run writes, at its first start::

    {"dataset": "/abs/path/of/the/data",          # resolved, as config.yaml's data.path
     "videos": ["covid_v09", ...],                 # the videos whose labels any loss term used ([] when none)
     "pretrained_videos": ["covid_v00", ...]}      # the videos whose frames were trained on (labelled or not)

Video ids are :attr:`hico.data.dataset.Video.video_id`. "Trained on" means the training split; the held-out
videos (``train.holdout``) only pass through the model for the held-out loss and the k-NN monitor, so they are
not in ``pretrained_videos`` (the k-NN monitor reads the training videos' labels to score held-out frames, but
it is a measurement, no loss term: it never changes the weights).

:func:`read_record` finds the run behind any backbone name (a run directory, ``RUNDIR/backbone.pt``,
``RUNDIR/checkpoints/*.pt``). For a run made before this file existed it recomputes both lists from
``config.yaml`` (the same split and label draw as the trainer, on a fresh scan of the dataset) and warns that it
did: exact unless some of the dataset's videos could not be decoded when the run started.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hico.config import uses_labels
from hico.data.splits import holdout_split, semi_labels
from hico.io import write_json

LABELLED_FILE = "labelled_videos.json"


def pretraining_split(
    labels: np.ndarray, groups: np.ndarray, n_classes: int, holdout: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The trainer's (train, held-out) video indices: a grouped, stratified holdout when the data allow one
    (``holdout > 0``, at least 4 patient groups and 2 classes), else every video for training."""
    if holdout > 0 and len(np.unique(groups)) >= 4 and n_classes > 1:
        return holdout_split(labels, groups, holdout, seed=seed)
    return np.arange(len(labels)), np.array([], dtype=np.int64)


def training_labels(cfg, train_labels: np.ndarray) -> np.ndarray:
    """Per training video, the label the loss sees, -1 for none (all -1 when the loss uses no labels)."""
    labels = semi_labels(train_labels, cfg.data.label_rate, seed=cfg.train.seed)
    if not uses_labels(cfg):
        labels[:] = -1
    return labels


def write_record(run_root: str | Path, dataset: str | Path, labelled: list[str], pretrained: list[str]) -> Path:
    """Write ``RUNDIR/labelled_videos.json`` atomically; ids already recorded there (a resumed run) are kept."""
    path = Path(run_root) / LABELLED_FILE
    labelled_set, pretrained_set = set(labelled), set(pretrained)
    if path.is_file():
        old = json.loads(path.read_text())
        labelled_set |= set(old.get("videos", []))
        pretrained_set |= set(old.get("pretrained_videos", []))
    record = {
        "dataset": str(Path(dataset).expanduser().resolve()),
        "videos": sorted(labelled_set),
        "pretrained_videos": sorted(pretrained_set),
    }
    return write_json(path, record)


@dataclass(frozen=True)
class PretrainingRecord:
    """What one pretraining run saw: its ``dataset`` (resolved), the ids of the videos whose labels it used
    (``labelled``) and of those it trained on (``pretrained``); ``source`` says where this was read from."""

    run: Path
    dataset: Path
    labelled: frozenset[str]
    pretrained: frozenset[str]
    source: str


def find_run_dir(spec: str | Path) -> Path | None:
    """The pretraining run directory behind a backbone name, or None (``random``, ``imagenet``, a file that is
    not inside a run directory): ``RUNDIR``, ``RUNDIR/<file>.pt`` or ``RUNDIR/checkpoints/<file>.pt``."""
    if str(spec) in ("random", "imagenet"):
        return None
    path = Path(spec).expanduser()
    candidates = [path] if path.is_dir() else [path.parent]
    if not path.is_dir() and path.parent.name == "checkpoints":
        candidates.append(path.parent.parent)
    for folder in candidates:
        if (folder / "config.yaml").is_file():
            return folder.resolve()
    return None


def read_record(spec: str | Path) -> PretrainingRecord | None:
    """The :class:`PretrainingRecord` of the run behind ``spec``, or None when it is not a run's.

    A run without ``labelled_videos.json`` (made before it existed) gets its record recomputed from
    ``config.yaml``, with a warning.

    Raises:
        ValueError: the file or config.yaml cannot be read, or an old run's dataset is gone (so what it used
            cannot be known).
    """
    run = find_run_dir(spec)
    if run is None:
        return None
    path = run / LABELLED_FILE
    if path.is_file():
        try:
            raw = json.loads(path.read_text())
            return PretrainingRecord(
                run,
                Path(raw["dataset"]),
                frozenset(raw["videos"]),
                frozenset(raw.get("pretrained_videos", raw["videos"])),
                LABELLED_FILE,
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} cannot be read ({e}): delete it to recompute it from config.yaml") from e
    record = recompute_record(run)
    warnings.warn(
        f"{run} has no {LABELLED_FILE} (made before it existed): recomputed from its config.yaml "
        f"({len(record.labelled)} videos' labels used, {len(record.pretrained)} videos trained on)",
        stacklevel=2,
    )
    return record


def recompute_record(run: str | Path) -> PretrainingRecord:
    """Recompute an old run's record from ``config.yaml``: the trainer's split and label draw on a fresh scan."""
    import yaml

    from hico.config import method_from_dict
    from hico.data import scan

    run = Path(run)
    cfg = method_from_dict(yaml.safe_load((run / "config.yaml").read_text()), str(run / "config.yaml"))
    if cfg.data.path is None:
        raise ValueError(f"{run}/config.yaml names no data.path: which videos it used cannot be known")
    try:
        videos = scan(cfg.data.path)
    except ValueError as e:
        raise ValueError(
            f"{run} has no {LABELLED_FILE} and its dataset cannot be scanned ({e}): "
            "which videos' labels it used cannot be known"
        ) from e
    train_idx, _ = pretraining_split(
        videos.labels, videos.groups, len(videos.classes), cfg.train.holdout, cfg.train.seed
    )
    labels = training_labels(cfg, videos.labels[train_idx])
    ids = np.array([v.video_id for v in videos.videos], dtype=object)[train_idx]
    return PretrainingRecord(
        run.resolve(),
        Path(cfg.data.path).expanduser().resolve(),
        frozenset(ids[labels >= 0].tolist()),
        frozenset(ids.tolist()),
        "recomputed from config.yaml",
    )
