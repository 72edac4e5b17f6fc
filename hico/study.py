"""``hico study``: what pretraining buys when labels are scarce, measured (a label-efficiency study).

For every method the study pretrains once, on the pretraining videos and with the same budget for each (epochs x
pairs per video x batch x image size, from the same seed, so the same number of steps), or takes a run directory or
a weights file as it is; ``random`` is no pretraining (the baseline). It then evaluates every backbone on the
evaluation videos with the same patient-grouped, stratified folds, at each label fraction and each protocol:

- label fractions: in each fold, a fraction of the training videos keep their labels, chosen per video, per class
  (at least one video of each class), from a seeded order of that fold's training videos, so the smaller budgets are
  inside the larger ones (the 5 % videos are among the 10 % ones). The test videos are the whole test fold, the
  same for every fraction and every method;
- ``knn``: k-NN (cosine, k neighbours) on frozen features of one level (``--level``, default ``global``: the pooled
  top map that fine-tuning builds on too), trained on the labelled frames;
- ``probe``: a linear probe (standardised logistic regression) on the same features, its L2 strength chosen per
  fold by a grouped cross-validation inside the labelled videos (``--C auto``, the default) or fixed (``--C``);
- ``finetune``: the honest fine-tune of :mod:`hico.eval.finetune` on the labelled videos, scored at the epoch its
  inner validation (a grouped part of the labelled videos) chooses (``honest_val``; ``honest_final`` is kept in
  ``study.json`` too).

Nothing about a test fold influences a reported number: frames, the label subset, the features' level, the probe's
C and the fine-tune's epoch are chosen without it. No backbone is tested on a video whose label its pretraining
used (``labelled_videos.json``): those videos and their patients' other videos are in no test fold, for every
method alike (:mod:`hico.eval.leakage`).

Output in ``--out DIR``: ``study.csv`` (one row per method x label fraction x protocol, :data:`COLUMNS`; the 95 %
interval resamples patient groups), ``study.json`` (the settings, every method's pretraining, the folds and, per
cell, per-fold accuracies, per-class precision / recall / F1 and per-video results; ``paired``: each method's
accuracy minus random init's on the same test videos, with a paired 95 % interval that draws the same patients for
both), ``runs/<method>/`` (the pretraining runs). The files are rewritten after every finished cell; run the same
command again after an interruption and it resumes: finished pretraining and finished cells are reused, a killed
pretraining continues from its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hico.io import atomic_write, write_json
from hico.names import LEVELS

COLUMNS = (
    "method",
    "label_fraction",
    "n_train_videos",
    "protocol",
    "accuracy",
    "ci_low",
    "ci_high",
    "macro_f1",
    "video_accuracy",
    "pretrain_seconds",
    "pretrain_steps",
)
"""The columns of ``study.csv``, in order."""

PROTOCOLS = ("knn", "probe", "finetune")
BASELINES = ("random", "imagenet")  # no pretraining: the initialisation as it is


@dataclass
class StudyConfig:
    """Settings of :func:`run_study` (``hico study --help`` says what each does)."""

    methods: list[str]
    eval_data: str
    out: str
    pretrain_data: str | None = None
    classes: list[str] | None = None
    label_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 1.0])
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    folds: int = 5
    seed: int = 0
    # the pretraining budget, the same for every method
    size: int = 64
    batch_size: int = 32
    epochs: int = 10
    pairs_per_video: int = 4
    lr: float | None = None
    overrides: list[str] = field(default_factory=list)
    # evaluation
    level: str = "global"
    frames_per_video: int = 8
    k: int = 10
    C: float | None = None  # None: chosen per fold inside the labelled videos (hico.eval.probe.choose_C)
    finetune_epochs: int = 10
    finetune_frames_per_video: int = 8
    bootstrap: int = 1000
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("no methods: name at least one, e.g. --methods hico simclr random")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"a method is named twice in --methods {' '.join(self.methods)}")
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise ValueError(f"--protocols must be among {', '.join(PROTOCOLS)}, got {' '.join(self.protocols)}")
        for f in self.label_fractions:
            if not (isinstance(f, (int, float)) and 0 < f <= 1):
                raise ValueError(f"--label-fractions must be in (0, 1], got {f}")
        self.label_fractions = sorted({float(f) for f in self.label_fractions})
        if self.level not in LEVELS:
            raise ValueError(f"--level must be one of {', '.join(LEVELS)}, got {self.level}")
        for name, low in (("folds", 2), ("size", 32), ("batch_size", 2), ("epochs", 1), ("pairs_per_video", 1),
                          ("frames_per_video", 1), ("k", 1), ("finetune_epochs", 1),
                          ("finetune_frames_per_video", 1), ("bootstrap", 1), ("seed", 0)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.C is not None and not self.C > 0:
            raise ValueError(f"--C must be > 0 or auto, got {self.C}")

    def fingerprint(self) -> dict:
        """The settings a finished cell depends on: a study folder resumed with other values is refused
        (methods, label fractions and protocols may change: cells are kept per method x fraction x protocol)."""
        d = asdict(self)
        for key in ("methods", "label_fractions", "protocols", "out", "device"):
            d.pop(key)
        return d


# ------------------------------------------------------------------------------------------------ folds


def label_subsets(
    train: np.ndarray, labels: np.ndarray, fractions: Sequence[float], seed: int
) -> dict[float, np.ndarray]:
    """The labelled part of one fold's training videos at each fraction: nested, stratified, seeded.

    Per class, the fold's training videos of that class are put in a seeded random order; the fraction ``f`` keeps
    the first ``max(1, ceil(f * n))`` of them. The orders do not depend on ``f``, so a smaller fraction's videos
    are always among a larger one's. Returns sorted positions (a subset of ``train``) per fraction.
    """
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(train[labels[train] == c]) for c in np.unique(labels[train])]
    out = {}
    for f in fractions:
        keep = [order[: max(1, math.ceil(f * len(order) - 1e-9))] for order in orders]
        out[f] = np.sort(np.concatenate(keep)) if keep else train[:0]
    return out


def study_folds(labels: np.ndarray, groups: np.ndarray, keep: np.ndarray, folds: int, seed: int):
    """Grouped, stratified folds with the ``keep`` videos' patient groups in training only (see the module)."""
    from hico.data.splits import keep_in_training, kfold_splits

    return keep_in_training(kfold_splits(labels, groups, k=folds, seed=seed), groups, keep)


# --------------------------------------------------------------------------------------------- the study


class Study:
    """One study folder: its settings, what is finished, and the files (see the module docstring)."""

    def __init__(self, cfg: StudyConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress
        self.path = self.out / "study.json"
        self.state = {"config": asdict(cfg), "methods": {}, "folds": None, "cells": {}}
        if self.path.exists():
            self._reopen()

    def _reopen(self) -> None:
        import json

        try:
            old = json.loads(self.path.read_text())
            old_cfg = StudyConfig(**old["config"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{self.path} is not a study file this version reads ({e}): choose another --out"
            ) from None
        mine, theirs = self.cfg.fingerprint(), old_cfg.fingerprint()
        changed = [k for k in mine if mine[k] != theirs.get(k)]
        if changed:
            k = changed[0]
            raise ValueError(
                f"{self.out} holds a study with other settings ({k}: {theirs.get(k)!r} there, {mine[k]!r} now): "
                "run it with its own settings or choose another --out"
            )
        self.state["methods"] = old.get("methods", {})
        self.state["cells"] = old.get("cells", {})
        self.state["folds"] = old.get("folds")

    def say(self, line: str) -> None:
        if self.progress:
            print(f"[study] {line}", flush=True)

    # ------------------------------------------------------------------------------------- pretraining

    def spec_of(self, method: str) -> tuple[str, str | None]:
        """(name in the table, what to pretrain: a method name, or None when ``method`` is used as it is)."""
        from hico.config import method_names

        if method in BASELINES:
            return method, None
        if method in method_names():  # a name first: ``hico`` is also the package's folder
            return method, method
        path = Path(method).expanduser()
        if path.exists():
            return (path.name if path.is_dir() else f"{path.parent.name}/{path.name}"), None
        raise ValueError(
            f"--methods {method}: not a method (one of {', '.join(method_names())}), not random / imagenet, "
            "and no such run directory or weights file"
        )

    def pretrain(self, name: str, method: str) -> dict:
        """Pretrain ``method`` in ``runs/<name>`` with the study's budget (or reuse / continue it)."""
        from hico.config import load_method
        from hico.train.rundir import read_status
        from hico.train.trainer import pretrain

        cfg = self.cfg
        if cfg.pretrain_data is None:
            raise ValueError(f"--methods {method} needs pretraining: pass --pretrain-data PATH (a folder of videos)")
        run = self.out / "runs" / name
        done = self.state["methods"].get(name)
        if done and done.get("state") == "finished" and (run / "backbone.pt").exists():
            done.update(pretrain_seconds=_seconds(run), pretrain_steps=_steps(run))
            return done
        overrides = [
            "model.init=random",
            f"augment.size={cfg.size}",
            f"data.working_size={2 * cfg.size}",
            f"train.batch_size={cfg.batch_size}",
            f"train.epochs={cfg.epochs}",
            f"train.pairs_per_video={cfg.pairs_per_video}",
            f"train.seed={cfg.seed}",
            "train.constant_epochs=0",
            "train.holdout=0",
            "train.knn_every=0",
            "train.epoch_checkpoints=false",
            f"train.device={cfg.device}",
            *([f"train.lr={cfg.lr}"] if cfg.lr is not None else []),
            *cfg.overrides,
            f"data.path={cfg.pretrain_data}",
        ]
        if (run / "config.yaml").exists() and read_status(run).get("state") != "finished":
            self.say(f"{name}: continuing the pretraining in {run}")
            pretrain(resume=run, progress=self.progress)
        elif not (run / "backbone.pt").exists():
            self.say(f"{name}: pretraining in {run}")
            pretrain(load_method(method, overrides), out=run, progress=self.progress)
        record = {
            "spec": str(run),
            "run": str(run),
            "state": "finished",
            "pretrain_seconds": _seconds(run),
            "pretrain_steps": _steps(run),
            "overrides": overrides,
        }
        self.state["methods"][name] = record
        self._save()
        return record

    def backbone(self, method: str) -> tuple[str, dict]:
        """(name, record) of one entry of ``--methods``: pretrained, reused or as it is."""
        name, to_train = self.spec_of(method)
        if to_train is not None:
            return name, self.pretrain(name, to_train)
        record = {"spec": method, "run": None, "state": "given", "pretrain_seconds": None, "pretrain_steps": None}
        if self.state["methods"].get(name, {}).get("spec", method) != method:  # another backbone of that name
            self.state["cells"] = {k: v for k, v in self.cells.items() if v.get("method") != name}
        if method not in BASELINES and Path(method).is_dir():
            record.update(
                run=str(Path(method)), pretrain_steps=_steps(Path(method)), pretrain_seconds=_seconds(Path(method))
            )
        self.state["methods"][name] = {**self.state["methods"].get(name, {}), **record}
        return name, record

    # -------------------------------------------------------------------------------------- evaluation

    def run(self) -> list[dict]:
        """Pretrain what is missing, evaluate every cell that is not finished, write the files; the rows."""
        from hico.eval.features import load_videos
        from hico.eval.leakage import guard

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        entries = [self.backbone(m) for m in cfg.methods]
        self.say(f"evaluation data: {cfg.eval_data}")
        videos = load_videos(cfg.eval_data, cfg.size, cfg.classes, progress=self.progress)
        ids = [v.video_id for v in videos.videos]
        labels, groups = np.asarray(videos.labels), np.asarray(videos.groups)
        guards = {name: guard(rec["spec"], cfg.eval_data, ids) for name, rec in entries}
        keep = np.any([g.keep for g in guards.values()], axis=0) if guards else np.zeros(len(ids), bool)
        splits = study_folds(labels, groups, keep, cfg.folds, cfg.seed)
        subsets = [label_subsets(tr, labels, cfg.label_fractions, seed=cfg.seed * 1000 + f) for f, (tr, _) in
                   enumerate(splits)]  # fmt: skip
        self.state["folds"] = [
            {
                "test_videos": [ids[i] for i in te],
                "train_videos": [ids[i] for i in tr],
                "labelled": {str(f): [ids[i] for i in s[f]] for f in cfg.label_fractions},
            }
            for (tr, te), s in zip(splits, subsets, strict=True)
        ]
        for name, _ in entries:
            self.state["methods"][name]["leakage"] = guards[name].report(splits, ids)
        self.state["classes"] = list(videos.classes)
        self.state["groups"] = {v.video_id: v.group for v in videos.videos}
        self._save()
        for name, rec in entries:
            todo = [(f, p) for f in cfg.label_fractions for p in cfg.protocols if _key(name, f, p) not in self.cells]
            if not todo:
                continue
            feats = None
            for fraction, protocol in todo:
                folds = [(s[fraction], te) for s, (_, te) in zip(subsets, splits, strict=True)]
                self.say(f"{name}: {protocol} at {fraction:g} of the labels")
                t0 = time.perf_counter()
                if protocol == "finetune":
                    cell = self._finetune(rec["spec"], videos, folds)
                else:
                    if feats is None:
                        feats = self._features(rec["spec"], videos)
                    cell = self._frozen(protocol, feats, videos, folds)
                cell.update(
                    method=name,
                    label_fraction=fraction,
                    protocol=protocol,
                    n_train_videos=int(np.median([len(tr) for tr, _ in folds])),
                    pretrain_seconds=rec.get("pretrain_seconds"),
                    pretrain_steps=rec.get("pretrain_steps"),
                    seconds=round(time.perf_counter() - t0, 1),
                )
                self.cells[_key(name, fraction, protocol)] = cell
                self._save()
        rows = self.rows()
        self.state["paired"] = self.paired()
        self._save()
        return rows

    def paired(self, baseline: str = "random") -> list[dict]:
        """Every method against ``baseline`` (when the study has it), cell by cell: the accuracy difference on the
        same test videos and its paired 95 % interval (:func:`hico.eval.metrics.paired_difference`: each
        bootstrap replicate draws the same patient groups for both). Cells without per-video results (written
        by an older version) are left out."""
        from hico.eval.metrics import paired_difference

        names = [self.spec_of(m)[0] for m in self.cfg.methods]
        if baseline not in names:
            return []
        out = []
        for name in names:
            for f in self.cfg.label_fractions:
                for p in self.cfg.protocols:
                    mine, theirs = self.cells.get(_key(name, f, p)), self.cells.get(_key(baseline, f, p))
                    if name == baseline or not (mine and theirs and "per_video" in mine and "per_video" in theirs):
                        continue
                    d, low, high = paired_difference(
                        mine["per_video"], theirs["per_video"], self.state["groups"], n=self.cfg.bootstrap,
                        seed=self.cfg.seed,
                    )  # fmt: skip
                    out.append({"method": name, "baseline": baseline, "label_fraction": f, "protocol": p,
                                "difference": d, "ci_low": low, "ci_high": high})  # fmt: skip
        return out

    @property
    def cells(self) -> dict:
        return self.state["cells"]

    def _features(self, spec: str, videos) -> np.ndarray:
        from hico.dist import resolve_device
        from hico.eval.features import extract_features
        from hico.models import resolve_backbone

        model = resolve_backbone(spec, seed=self.cfg.seed)
        feats = extract_features(
            model,
            videos,
            size=self.cfg.size,
            per_video=self.cfg.frames_per_video,
            device=resolve_device(self.cfg.device),
            progress=self.progress,
        )
        return feats

    def _frozen(self, protocol: str, feats, videos, folds) -> dict:
        """k-NN or linear probe on the frozen features of the study's level, over the folds."""
        from hico.eval.knn import knn_predict
        from hico.eval.probe import fit_linear

        x = np.asarray(feats.levels[self.cfg.level], dtype=np.float32)
        y, video = feats.labels, feats.video
        preds, trues, vids, fold_acc, chosen = [], [], [], [], []
        for train, test in folds:
            tr, te = np.isin(video, train), np.isin(video, test)
            if protocol == "knn":
                p = knn_predict(x[tr], y[tr], x[te], k=self.cfg.k, num_classes=len(feats.classes))
            else:
                model = fit_linear(x[tr], y[tr], C=self.cfg.C, groups=feats.groups[tr])[0]
                chosen.append(float(model[-1].C))
                p = model.predict(x[te])
            preds.append(p)
            trues.append(y[te])
            vids.append(feats.frame_video_ids[te])
            fold_acc.append(float(np.mean(p == y[te])))
        cell = self._score(np.concatenate(trues), np.concatenate(preds), np.concatenate(vids), videos, fold_acc)
        return {**cell, "C": chosen} if chosen else cell

    def _score(self, y, p, v, videos, fold_acc) -> dict:
        from hico.eval.finetune import accuracy_interval, protocol_metrics
        from hico.eval.metrics import per_video_correct

        m = protocol_metrics(y, p, v, list(videos.classes))
        low, high = accuracy_interval(y, p, v, self.state["groups"], n=self.cfg.bootstrap, seed=self.cfg.seed)
        return {
            "accuracy": m["accuracy"],
            "ci_low": low,
            "ci_high": high,
            "macro_f1": m["macro_f1"],
            "video_accuracy": m["video_accuracy"],
            "per_class": m["per_class"],
            "fold_accuracy": fold_acc,
            "per_video": per_video_correct(y, p, v),
        }

    def _finetune(self, spec: str, videos, folds) -> dict:
        from hico.eval.finetune import finetune
        from hico.eval.finetune_config import FinetuneConfig

        cfg = self.cfg
        ft = FinetuneConfig(
            folds=cfg.folds,
            epochs=cfg.finetune_epochs,
            size=cfg.size,
            frames_per_video=cfg.finetune_frames_per_video,
            test_frames_per_video=cfg.frames_per_video,
            seed=cfg.seed,
            device=cfg.device,
            bootstrap=cfg.bootstrap,
        )
        try:
            result = finetune(spec, videos, ft, progress=self.progress, splits=folds)
        except ValueError as e:  # e.g. a label budget too small for an inner validation
            nan = float("nan")
            return {"accuracy": nan, "ci_low": nan, "ci_high": nan, "macro_f1": nan, "video_accuracy": nan,
                    "error": str(e)}  # fmt: skip
        s = result["summary"]["honest_val"]
        return {
            "accuracy": s["accuracy"],
            "ci_low": s["accuracy_ci"][0],
            "ci_high": s["accuracy_ci"][1],
            "macro_f1": s["macro_f1"],
            "video_accuracy": s["video_accuracy"],
            "per_class": s["per_class"],
            "fold_accuracy": s["fold_accuracy"],
            "per_video": s["per_video"],
            "honest_final": {k: result["summary"]["honest_final"][k] for k in ("accuracy", "accuracy_ci", "macro_f1")},
            "epochs": s["epochs"],
        }

    # ------------------------------------------------------------------------------------------ files

    def rows(self) -> list[dict]:
        """The rows of ``study.csv`` for this invocation's methods, fractions and protocols, in that order."""
        names = [self.spec_of(m)[0] for m in self.cfg.methods]
        out = []
        for name in names:
            for f in self.cfg.label_fractions:
                for p in self.cfg.protocols:
                    cell = self.cells.get(_key(name, f, p))
                    if cell is not None:  # the pretraining's figures from its record (refreshed on every run)
                        record = self.state["methods"].get(name, {})
                        row = {c: cell.get(c) for c in (*COLUMNS, "error")}
                        row.update(
                            pretrain_seconds=record.get("pretrain_seconds"), pretrain_steps=record.get("pretrain_steps")
                        )
                        out.append(row)
        return out

    def _save(self) -> None:
        write_json(self.path, self.state)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write(self.out / "study.csv", lambda f: f.write(buf.getvalue()))


def _key(name: str, fraction: float, protocol: str) -> str:
    return f"{name}|{fraction:g}|{protocol}"


def _steps(run: Path) -> int | None:
    """The optimizer steps a run directory's metrics record (None when it has none)."""
    from hico.train.rundir import read_metrics

    try:
        steps = [r.get("step") for r in read_metrics(run)]
    except (OSError, ValueError):
        return None
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def _seconds(run: Path) -> float | None:
    """Seconds a run spent training, from its own records (so a resumed or reused run counts right): per epoch,
    the pairs it trained on over its measured pairs/s (data and steps; the per-epoch evaluation left out)."""
    from hico.train.rundir import read_config, read_metrics, read_status

    try:
        per_epoch = int(read_status(run)["steps_per_epoch"]) * int(read_config(run)["train"]["batch_size"])
        rates = [r["pairs_per_s"] for r in read_metrics(run) if r.get("kind") == "epoch" and r.get("pairs_per_s")]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return round(sum(per_epoch / rate for rate in rates), 1) if rates else None


def run_study(cfg: StudyConfig, progress: bool = True) -> list[dict]:
    """Run (or resume) the study ``cfg`` describes; the rows of ``study.csv``."""
    return Study(cfg, progress).run()


def format_paired(rows: list[dict]) -> str:
    """A text table of :meth:`Study.paired`'s rows: the difference from the baseline in points, [95 % interval]."""
    if not rows:
        return ""
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    lines: dict[tuple, dict] = {}
    for r in rows:
        text = f"{100 * r['difference']:+5.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"
        lines.setdefault((r["method"], r["label_fraction"]), {})[r["protocol"]] = text
    width, name = 22, max([22, *(len(m) + 2 for m, _ in lines)])
    head = f"{'method':<{name}}{'labels':>7}  " + "".join(f"{p:<{width}}" for p in protocols)
    body = [
        f"{m:<{name}}{f:>7g}  " + "".join(f"{cells.get(p, '-'):<{width}}" for p in protocols)
        for (m, f), cells in lines.items()
    ]
    base = rows[0]["baseline"]
    return "\n".join([
        f"difference from {base} on the same test videos, in points [95 % paired interval, patient-group bootstrap]",
        head, *body,
    ])  # fmt: skip


def format_table(rows: list[dict]) -> str:
    """A text table: one line per method and label fraction, one column per protocol ("acc [low, high]")."""
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    lines = {}
    for r in rows:
        key = (r["method"], r["label_fraction"], r["n_train_videos"])
        acc = r["accuracy"]
        text = (
            "failed"
            if acc is None or acc != acc
            else f"{100 * acc:5.1f} [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
        )
        lines.setdefault(key, {})[r["protocol"]] = text
    width, name = 20, max([22, *(len(m) + 2 for m, _, _ in lines)])
    head = f"{'method':<{name}}{'labels':>7}{'videos':>7}  " + "".join(f"{p:<{width}}" for p in protocols)
    body = [
        f"{m:<{name}}{f:>7g}{n:>7}  " + "".join(f"{cells.get(p, '-'):<{width}}" for p in protocols)
        for (m, f, n), cells in lines.items()
    ]
    notes = [
        f"failed: {r['method']}, {r['protocol']} at {r['label_fraction']:g}: {r['error']}"
        for r in rows
        if r.get("error")
    ]
    return "\n".join([head, *body, "accuracy of test frames in %, [95 % interval, patient-group bootstrap]", *notes])
