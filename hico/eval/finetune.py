"""Downstream fine-tuning, k-fold by patient, with honest and optimistic metrics side by side.

The model: the pretrained ResNet-18 trunk (``resolve_backbone(spec).backbone``), global average pooling of C5,
and a NEW ``Linear(512, K)`` head. ``trainable`` picks what is trained:

- ``"last_block"`` (default; the authors' "fine-tune the last 3 layers"): ``layer4[1]`` (two convs, two BNs)
  and the head;
- ``"head"``: the head only (a linear classifier on frozen features);
- ``"layer4"``: all of ``layer4`` and the head;
- ``"all"``: everything.

Frozen parts are frozen completely: no gradient, not in the optimizer (so no weight decay either), and kept in
eval mode, so their BatchNorm layers use, and never update, the pretrained running statistics. The frozen
prefix of the network runs under ``torch.no_grad``; in training it runs on every (augmented) batch, and in
evaluation its output on the (deterministic) evaluation inputs is computed once per fold and cached when it
fits in :data:`EVAL_CACHE_BYTES` (then each epoch's evaluation runs only the trainable suffix).

Training (the authors' recipe unless said otherwise): cross-entropy, Adam (lr 0.01, L2 weight decay 1e-4),
a cosine decay of the learning rate to 0 over all steps of all epochs (stepped per batch), batch 32, 30 epochs
(the paper; the authors' code ran 100). Augmentation: :class:`~hico.data.augment.BatchAugment` with
RandomResizedCrop(scale 0.8-1, ratio 0.8-1.25), horizontal flip, and a MILD brightness / contrast jitter
(strength 0.2, probability 0.8: the pretraining's 0.8 would wash frames out for a classifier), per sample.
Evaluation input: the whole frame resized to ``size`` by the same bilinear resampling and normalisation as
training (BatchAugment with identity parameters), so training and test inputs differ only by the augmentation.

Frames: a training video contributes ``frames_per_video`` evenly spaced frames (the centres of that many
equal segments of the video; all frames when it has fewer; ``None`` = all), fixed for the whole run, so long
videos do not dominate the loss. Test and inner-validation videos contribute ``test_frames_per_video`` frames
chosen the same way (default ``None`` = all frames: every frame is scored, as the authors do).

Folds and protocols. Videos are split by :func:`~hico.data.splits.kfold_splits` (grouped by patient, stratified
by class); when the backbone was pretrained on these videos with some of their labels (a softened CE), those
videos and their patients' other videos are in no test fold: they are trained on in every fold, never scored
(:mod:`hico.eval.leakage`; ``label_overlap`` and ``pretrained_on_test_videos`` in the results). In each fold, a grouped holdout (:func:`~hico.data.splits.holdout_split`, ``val_fraction`` of the
fold's training videos) is the INNER VALIDATION set; the model is trained ONCE on the rest, and the test
and inner-validation sets are scored after every epoch. From that one run, three numbers per fold:

- ``honest_final``: the test metrics at the final epoch (a fixed epoch budget chosen in advance);
- ``honest_val``: the test metrics at the epoch with the best inner-validation accuracy (ties: lower
  validation loss, then the earlier epoch); no test label is looked at to choose it;
- ``optimistic_best_test``: the test metrics at the epoch with the best TEST accuracy (ties: the earlier
  epoch): the authors' protocol. It selects on the test set, so it is biased upwards; it is reported only
  beside the honest ones, and it is >= ``honest_final`` by construction.

All three come from the same model trained on the fold's training videos minus the inner validation videos,
so they differ only in how the epoch is chosen (training on 80 % of the fold's training videos costs all
three a little against training on all of them). Per fold and over folds (confusion matrices summed, then
accuracy = trace / total): confusion matrix, accuracy, per-class precision / recall / F1, macro F1,
video-level accuracy (majority vote of the frames, ties to the lowest class index), and a bootstrap 95 %
interval of the total accuracy that resamples PATIENT GROUPS (``split_group``, the unit the folds are split
by): all test frames of all videos of one patient are drawn, or not, together. Resampling videos instead would
treat two videos of one patient as independent and make the interval too narrow. Each protocol's summary in
``results.json`` names the unit: ``"bootstrap_unit": "patient group"`` (:data:`BOOTSTRAP_UNIT`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hico.data.augment import BatchAugment, frames_to_input, make_generator
from hico.data.dataset import VideoDataset
from hico.data.splits import holdout_split, kfold_splits
from hico.dist import resolve_device
from hico.eval.features import frame_indices
from hico.eval.finetune_config import TRAINABLE, FinetuneConfig
from hico.eval.leakage import guard, overlap_line
from hico.eval.metrics import bootstrap_ci, classification_report, confusion, per_video_correct, video_vote
from hico.models.backbone import STAGE_CHANNELS, ResNetTrunk

_FIRST_TRAINABLE_STAGE = {"all": 0, "layer4": 4, "last_block": 5, "head": 6}
"""Index, in :meth:`FinetuneNet.stages`, of the first trained stage (stem, layer1..3, layer4[0], layer4[1])."""

PROTOCOLS = ("honest_final", "honest_val", "optimistic_best_test")

PROTOCOL_LABELS = {
    "honest_final": "final epoch (honest)",
    "honest_val": "inner-val best epoch (honest)",
    "optimistic_best_test": "best TEST epoch (optimistic)",
}

PROTOCOL_DESCRIPTIONS = {
    "honest_final": "test metrics at the final epoch (fixed epoch budget)",
    "honest_val": "test metrics at the epoch with the best inner-validation accuracy (grouped holdout of the "
    "fold's training videos, not trained on)",
    "optimistic_best_test": "OPTIMISTIC: test metrics at the epoch with the best test accuracy (the authors' "
    "protocol; selects on the test set, biased upwards)",
}

AUGMENT = {
    "scale": (0.8, 1.0),
    "ratio": (0.8, 1.25),
    "flip_p": 0.5,
    "brightness": 0.2,
    "contrast": 0.2,
    "saturation": 0.0,
    "hue": 0.0,
    "jitter_p": 0.8,
}
"""Training augmentation (:class:`BatchAugment` overrides besides ``size``): crop and flip as the authors, mild
jitter."""

BOOTSTRAP_UNIT = "patient group"
"""What the accuracy interval resamples (``summary[protocol]["bootstrap_unit"]`` in ``results.json``)."""

EVAL_CACHE_BYTES = 2 * 1024**3
"""Largest cache of the frozen prefix's output on one evaluation set; larger sets recompute it each epoch."""

EVAL_BATCH = 128
"""Frames per forward pass in evaluation."""


# ----------------------------------------------------------------------------------------------------- model


class FinetuneNet(nn.Module):
    """ResNet-18 trunk -> global average pooling of C5 -> a new ``Linear(512, num_classes)``.

    ``forward(x)``: (N, 3, H, W) -> (N, num_classes) logits, = ``suffix(prefix(x))``: :meth:`prefix` runs the
    frozen stages under ``torch.no_grad``, :meth:`suffix` the trained ones, the pooling and the head.

    The frozen stages have ``requires_grad = False`` and stay in eval mode whatever ``train()`` is called
    with (their BatchNorm running statistics are used, never updated).
    """

    def __init__(self, trunk: ResNetTrunk, num_classes: int, trainable: str = "last_block") -> None:
        super().__init__()
        if trainable not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
        self.trunk = trunk
        self.head = nn.Linear(STAGE_CHANNELS["c5"], num_classes)
        self.trainable = trainable
        self.split = _FIRST_TRAINABLE_STAGE[trainable]
        for i, stage in enumerate(self.stages()):
            for module in stage:
                module.requires_grad_(i >= self.split)
        self.train()

    def stages(self) -> list[tuple[nn.Module, ...]]:
        """The trunk in six stages: stem (conv1, bn1, relu, maxpool), layer1, layer2, layer3, layer4[0],
        layer4[1]."""
        t = self.trunk
        return [
            (t.conv1, t.bn1, t.relu, t.maxpool),
            (t.layer1,),
            (t.layer2,),
            (t.layer3,),
            (t.layer4[0],),
            (t.layer4[1],),
        ]

    def frozen_modules(self) -> list[nn.Module]:
        """The modules of the frozen stages."""
        return [m for stage in self.stages()[: self.split] for m in stage]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that are trained (``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> FinetuneNet:
        """Set train / eval mode; the frozen stages stay in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def prefix(self, x: Tensor) -> Tensor:
        """The frozen stages' output (no autograd graph); ``x`` itself when nothing is frozen."""
        with torch.no_grad():
            for stage in self.stages()[: self.split]:
                for module in stage:
                    x = module(x)
        return x

    def suffix(self, h: Tensor) -> Tensor:
        """The trained stages, global average pooling and the head: prefix output -> logits."""
        for stage in self.stages()[self.split :]:
            for module in stage:
                h = module(h)
        return self.head(h.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.suffix(self.prefix(x))


def make_augment(size: int) -> BatchAugment:
    """The training augmentation at ``size`` px (:data:`AUGMENT`)."""
    return BatchAugment(size=size, **AUGMENT)


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of ``order``; a last batch of one sample joins the previous one (BatchNorm)."""
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] = np.concatenate([chunks[-1], last])
    return chunks


def train_epoch(
    model: FinetuneNet,
    frames: Tensor,
    labels: Tensor,
    augment: BatchAugment,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    batch_size: int,
    rng: np.random.Generator,
    generator: torch.Generator | None = None,
    amp: bool = False,
) -> float:
    """One epoch of cross-entropy training over ``frames`` (N, S, S) uint8 with ``labels`` (N,) int64.

    Batches are drawn from a permutation by ``rng``, augmented on the model's device (``generator`` on that
    device), stepped by ``optimizer`` and, per batch, ``scheduler``. Returns the mean training loss.
    """
    device = next(model.parameters()).device
    model.train()
    total, count = 0.0, 0
    for idx in _batches(rng.permutation(len(frames)), batch_size):
        sel = torch.from_numpy(idx)
        x = augment(frames[sel].to(device, non_blocking=True), generator, memory_format=torch.contiguous_format)
        y = labels[sel].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total = total + loss.detach() * len(idx)  # summed on the device: one host sync per epoch, not per batch
        count += len(idx)
    return float(total) / max(count, 1)


class EvalSet:
    """The frames of some videos to score after every epoch, with the frozen prefix's output cached.

    Args:
        frames: (N, S, S) uint8 (CPU).
        labels: (N,) int64 true class of each frame.
        video_ids: (N,) video id of each frame.
    """

    def __init__(self, frames: Tensor, labels: np.ndarray, video_ids: np.ndarray) -> None:
        self.frames = frames
        self.labels = np.asarray(labels, dtype=np.int64)
        self.video_ids = np.asarray(video_ids)
        self._features: Tensor | None = None
        self._cacheable = True

    def __len__(self) -> int:
        return len(self.frames)

    @torch.no_grad()
    def logits(self, model: FinetuneNet, augment: BatchAugment, amp: bool = False) -> Tensor:
        """(N, K) float32 CPU logits of the model in eval mode; caches the prefix's output on first use.

        The cache is valid because the prefix is frozen (no gradient, eval mode) for the model's whole life:
        use one EvalSet per model.
        """
        device = next(model.parameters()).device
        model.eval()
        out = []
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if self._features is None and self._cacheable and model.split > 0 and len(self):
                self._build_cache(model, augment, device)
            for start in range(0, len(self), EVAL_BATCH):
                if self._features is not None:
                    logits = model.suffix(self._features[start : start + EVAL_BATCH])
                else:
                    x = frames_to_input(self.frames[start : start + EVAL_BATCH].to(device), augment.cfg)
                    logits = model(x)
                out.append(logits.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, model.head.out_features)

    def _build_cache(self, model: FinetuneNet, augment: BatchAugment, device: torch.device) -> None:
        parts: list[Tensor] = []
        used = 0
        for start in range(0, len(self), EVAL_BATCH):
            h = model.prefix(frames_to_input(self.frames[start : start + EVAL_BATCH].to(device), augment.cfg))
            used += h.numel() * h.element_size()
            if used * len(self) / (start + len(h)) > EVAL_CACHE_BYTES:  # projected size of the whole cache
                self._cacheable = False
                return
            parts.append(h)
        self._features = torch.cat(parts)


# ------------------------------------------------------------------------------------------------------ data


def gather_frames(
    videos: VideoDataset, indices: np.ndarray, count: int | None
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """The chosen frames of videos ``indices``: ((N, S, S) uint8 tensor, (N,) labels, (N,) video ids)."""
    labels = videos.labels
    chunks, ys, ids = [], [], []
    for i in indices:
        frames = videos.frames(int(i))
        sel = frame_indices(len(frames), count)
        chunks.append(np.asarray(frames[sel]))
        ys.append(np.full(len(sel), labels[i], dtype=np.int64))
        ids += [videos.videos[int(i)].video_id] * len(sel)
    if not chunks:
        raise ValueError("no video to gather frames from")
    return torch.from_numpy(np.concatenate(chunks)), np.concatenate(ys), np.array(ids)


# --------------------------------------------------------------------------------------------------- metrics


def protocol_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, video_ids: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Frame-level confusion matrix and report, and video-level (majority vote) accuracy."""
    cm = confusion(y_true, y_pred, len(classes))
    vt, vp = video_vote(y_pred, video_ids, y_true, num_classes=len(classes))
    return {
        "confusion": cm.tolist(),
        **classification_report(cm, classes),
        "video_accuracy": float((vt == vp).mean()) if len(vt) else 0.0,
        "n_videos": len(vt),
    }


def inner_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) positions in a fold's training videos: :func:`~hico.data.splits.holdout_split`.

    ``holdout_split`` holds out one of ``round(1 / fraction)`` grouped, stratified folds; on a small training
    set (fewer groups than that, or fewer videos than that in every class) scikit-learn refuses the split, so
    the number of folds is then capped (a larger share is held out). sklearn's warning about small classes is
    silenced: the split is still grouped and as stratified as the counts allow. When even that is refused (a
    few labelled videos, e.g. one per class in a small label budget), a seeded ``round(fraction * groups)`` of the
    patient groups (at least one, never all) is held out, grouped but not stratified.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    k = max(2, round(1 / fraction))
    cap = min(len(np.unique(groups)), int(np.bincount(labels).max()))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            if k <= cap:
                return holdout_split(labels, groups, fraction=fraction, seed=seed)
            return kfold_splits(labels, groups, k=max(2, cap), seed=seed)[0]
        except ValueError:
            if len(np.unique(groups)) < 2:
                raise
    names = np.random.default_rng(seed).permutation(np.unique(groups))
    held = names[: min(len(names) - 1, max(1, round(fraction * len(names))))]
    val = np.isin(groups, held)
    return np.flatnonzero(~val), np.flatnonzero(val)


def _choose_epochs(history: list[dict]) -> dict[str, int]:
    """0-based epoch of each protocol (see the module docstring for the tie rules)."""
    final = len(history) - 1
    val = max(range(len(history)), key=lambda e: (history[e]["val_accuracy"], -history[e]["val_loss"], -e))
    best = max(range(len(history)), key=lambda e: (history[e]["test_accuracy"], -e))
    return {"honest_final": final, "honest_val": val, "optimistic_best_test": best}


def accuracy_interval(
    y_true: np.ndarray, y_pred: np.ndarray, video_ids: np.ndarray, group_of: dict[str, str], n: int, seed: int
) -> tuple[float, float]:
    """Bootstrap 95 % interval of the frame accuracy that resamples patient groups (:data:`BOOTSTRAP_UNIT`).

    Args:
        y_true, y_pred: (F,) true and predicted class of each test frame.
        video_ids: (F,) video of each frame.
        group_of: patient group of each video id (``Video.group``: the ``split_group`` the folds are split by).
        n, seed: bootstrap replicates and seed (:func:`~hico.eval.metrics.bootstrap_ci`).

    All frames of all videos of one patient are drawn together, as many times as that patient is drawn.
    """
    patients = np.array([group_of[v] for v in np.asarray(video_ids).tolist()])
    return bootstrap_ci(y_true, y_pred, n=n, seed=seed, groups=patients)


# ------------------------------------------------------------------------------------------------------- run


def finetune(
    backbone_spec: str,
    videos: VideoDataset,
    cfg: FinetuneConfig,
    progress: bool = True,
    keep_in_training: Sequence[str] = (),
    splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Fine-tune the backbone ``backbone_spec`` on ``videos``, ``cfg.folds``-fold, and score it.

    Args:
        backbone_spec: ``random``, ``imagenet``, a run directory or a backbone / checkpoint file
            (:func:`hico.models.resolve_backbone`).
        videos: a loaded dataset (its frames' working size should be >= ``cfg.size``).
        cfg: settings.
        progress: a tqdm bar per fold (epochs), with loss and accuracies in its postfix.
        keep_in_training: ids of further videos never to test (nor to use as inner validation), e.g. another
            backbone's labelled videos, to compare two backbones on the same test videos.
        splits: the folds as (train, test) positions in ``videos`` (after ``cfg.classes``), chosen by the
            caller, who then answers for them (``hico study`` trains on a label budget, a part of each fold's
            training videos, and keeps every backbone's labelled videos out of its test folds); default: grouped,
            stratified ``cfg.folds``-fold, constrained by the pretraining's labelled videos.
        on_epoch: called after every epoch of every fold with ``{"fold", "folds", "epoch", "epochs", "seconds"}``
            (1-based; ``seconds`` since the start) and that epoch's history record, e.g. to show progress.

    Returns:
        A JSON-serialisable dict: ``config``, ``backbone``, ``data``, ``classes``, ``device``, ``protocols``
        (what each protocol means), ``folds`` (per fold: ``train_videos``, ``val_videos``, ``test_videos``
        ids, frame counts, per-epoch ``history`` and the three protocols' metrics), ``summary`` (per
        protocol over all folds: summed ``confusion``, ``accuracy``, ``accuracy_ci``, ``per_class``,
        ``macro_f1``, ``video_accuracy``, chosen ``epochs`` (1-based), ``fold_accuracy``, and
        ``bootstrap_unit``: ``"patient group"``, what ``accuracy_ci`` resamples), ``seconds``, and
        what the pretraining saw of these videos (:mod:`hico.eval.leakage`): ``label_overlap``,
        ``pretrained_on_test_videos``, ``kept_in_training`` (ids tested in no fold), ``pretraining``.

    Raises:
        ValueError: a fold is left without test videos once the videos whose labels the pretraining used are
            kept in training, or without two patient groups for the inner validation.
    """
    from tqdm.auto import tqdm

    from hico.models.resolve import resolve_backbone

    t0 = time.perf_counter()
    if cfg.classes is not None:
        videos = videos.with_classes(cfg.classes)
    classes = videos.classes
    if len(classes) < 2:
        raise ValueError(f"fine-tuning needs at least 2 classes, {videos.root} has {classes}")
    device = resolve_device(cfg.device)
    amp = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    pretrained = resolve_backbone(backbone_spec).backbone.cpu()
    labels, groups = videos.labels, videos.groups
    ids = np.array([v.video_id for v in videos.videos])
    seen = guard(backbone_spec, videos.root, ids.tolist(), keep_in_training)
    if splits is None:
        splits = seen.constrain(kfold_splits(labels, groups, k=cfg.folds, seed=cfg.seed), groups)
    never_tested = np.ones(len(ids), dtype=bool)
    for _, test_idx in splits:
        never_tested[test_idx] = False
    augment = make_augment(cfg.size)

    folds, chosen = [], []
    for f, (train_idx, test_idx) in enumerate(splits):
        t_fold = time.perf_counter()
        scored, held = train_idx[~never_tested[train_idx]], train_idx[never_tested[train_idx]]
        if len(np.unique(groups[scored])) < 2:
            raise ValueError(f"fold {f + 1}: its training videos come from one patient group; no inner validation")
        fit_rel, val_rel = inner_split(labels[scored], groups[scored], cfg.val_fraction, seed=cfg.seed + f)
        fit_idx, val_idx = np.sort(np.concatenate([scored[fit_rel], held])), scored[val_rel]
        train_x, train_y, _ = gather_frames(videos, fit_idx, cfg.frames_per_video)
        val_set = EvalSet(*gather_frames(videos, val_idx, cfg.test_frames_per_video))
        test_set = EvalSet(*gather_frames(videos, test_idx, cfg.test_frames_per_video))
        train_labels = torch.from_numpy(train_y)

        torch.manual_seed(cfg.seed * 1000 + f)
        model = FinetuneNet(copy.deepcopy(pretrained), len(classes), cfg.trainable).to(device)
        optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * len(_batches(np.arange(len(train_x)), cfg.batch_size))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        rng = np.random.default_rng([cfg.seed, f])
        generator = make_generator(cfg.seed * 1000 + f, device)

        history, test_preds = [], []
        bar = tqdm(range(cfg.epochs), desc=f"fold {f + 1}/{cfg.folds}", unit="epoch", disable=not progress)
        for epoch in bar:
            lr = optimizer.param_groups[0]["lr"]
            loss = train_epoch(
                model, train_x, train_labels, augment, optimizer, scheduler, cfg.batch_size, rng, generator, amp
            )
            val_logits = val_set.logits(model, augment, amp)
            test_logits = test_set.logits(model, augment, amp)
            test_pred = test_logits.argmax(1).numpy()
            history.append(
                {
                    "epoch": epoch + 1,
                    "lr": lr,
                    "train_loss": loss,
                    "val_loss": float(F.cross_entropy(val_logits, torch.from_numpy(val_set.labels))),
                    "val_accuracy": float((val_logits.argmax(1).numpy() == val_set.labels).mean()),
                    "test_accuracy": float((test_pred == test_set.labels).mean()),
                }
            )
            test_preds.append(test_pred.astype(np.int64))
            h = history[-1]
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{h['val_accuracy']:.3f}", test=f"{h['test_accuracy']:.3f}")
            if on_epoch is not None:
                on_epoch({"fold": f + 1, "folds": len(splits), "epoch": epoch + 1, "epochs": cfg.epochs,
                          "seconds": round(time.perf_counter() - t0, 1), **h})  # fmt: skip
        bar.close()

        epochs = _choose_epochs(history)
        protocols = {
            name: {"epoch": e + 1, **protocol_metrics(test_set.labels, test_preds[e], test_set.video_ids, classes)}
            for name, e in epochs.items()
        }
        chosen.append({name: (test_set.labels, test_preds[e], test_set.video_ids) for name, e in epochs.items()})
        folds.append(
            {
                "fold": f + 1,
                "train_videos": ids[fit_idx].tolist(),
                "val_videos": ids[val_idx].tolist(),
                "test_videos": ids[test_idx].tolist(),
                "n_train_frames": len(train_x),
                "n_val_frames": len(val_set),
                "n_test_frames": len(test_set),
                "history": history,
                "protocols": protocols,
                "seconds": round(time.perf_counter() - t_fold, 2),
            }
        )

    group_of = {v.video_id: v.group for v in videos.videos}
    summary = {}
    for name in PROTOCOLS:
        y = np.concatenate([c[name][0] for c in chosen])
        p = np.concatenate([c[name][1] for c in chosen])
        v = np.concatenate([c[name][2] for c in chosen])
        low, high = accuracy_interval(y, p, v, group_of, n=cfg.bootstrap, seed=cfg.seed)
        fold_acc = [fold["protocols"][name]["accuracy"] for fold in folds]
        summary[name] = {
            "description": PROTOCOL_DESCRIPTIONS[name],
            "epochs": [fold["protocols"][name]["epoch"] for fold in folds],
            **protocol_metrics(y, p, v, classes),
            "accuracy_ci": [low, high],
            "bootstrap_unit": BOOTSTRAP_UNIT,
            "fold_accuracy": fold_acc,
            "fold_accuracy_mean": float(np.mean(fold_acc)),
            "fold_accuracy_std": float(np.std(fold_acc)),
            "per_video": per_video_correct(y, p, v),  # for paired comparisons of backbones on these videos
        }
    return {
        "config": dataclasses.asdict(cfg),
        "backbone": str(backbone_spec),
        "data": str(videos.root),
        "classes": classes,
        "device": str(device),
        "n_videos": len(videos),
        "protocols": PROTOCOL_DESCRIPTIONS,
        "folds": folds,
        "summary": summary,
        **seen.report(splits, ids.tolist()),
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ------------------------------------------------------------------------------------------------ reporting


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ci_unit(results: dict) -> str:
    """What the accuracy interval of ``results`` resampled: ``"patient group"``, or ``"video"`` for a
    ``results.json`` written before the unit was recorded (those resampled videos)."""
    return results["summary"][PROTOCOLS[0]].get("bootstrap_unit", "video")


def format_results(results: dict) -> str:
    """A plain-text table: one row per protocol (accuracy [95 % CI], macro F1, video accuracy, per-class
    recall), then the chosen epochs and a note on the optimistic row."""
    cfg, classes, summary = results["config"], results["classes"], results["summary"]
    n_frames = summary[PROTOCOLS[0]]["total"]
    lines = [
        f"fine-tuning {results['backbone']} on {results['data']}: {cfg['folds']} folds x {cfg['epochs']} epochs, "
        f"trainable {cfg['trainable']}, {cfg['size']} px, {results['n_videos']} videos, {n_frames} test frames",
    ]
    rc = [f"R {c}"[:12] for c in classes]
    header = f"{'protocol':<32}{'accuracy [95% CI]':<22}{'macro F1':>9}{'video acc':>11}" + "".join(
        f"{c:>13}" for c in rc
    )
    lines += [header, "-" * len(header)]
    for name in PROTOCOLS:
        s = summary[name]
        acc = f"{_pct(s['accuracy'])} [{_pct(s['accuracy_ci'][0])}, {_pct(s['accuracy_ci'][1])}]"
        recalls = "".join(f"{_pct(s['per_class'][c]['recall']):>13}" for c in classes)
        lines.append(
            f"{PROTOCOL_LABELS[name]:<32}{acc:<22}{_pct(s['macro_f1']):>9}{_pct(s['video_accuracy']):>11}{recalls}"
        )
    lines.append("")
    for name in PROTOCOLS:
        lines.append(f"epochs per fold, {PROTOCOL_LABELS[name]}: {', '.join(map(str, summary[name]['epochs']))}")
    if "label_overlap" in results:
        lines.append(overlap_line(results))
    lines.append(
        f"accuracy: frames, confusion matrices summed over folds; CI: bootstrap over test {ci_unit(results)}s; "
        "video acc: majority vote; R: recall (%)."
    )
    lines.append(
        "OPTIMISTIC: the 'best TEST epoch' row picks each fold's epoch on its test set (the authors' protocol); "
        "it is biased upwards. Quote the honest rows."
    )
    return "\n".join(lines)
