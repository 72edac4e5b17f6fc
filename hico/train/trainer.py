"""Pretraining: one readable loop that runs on CPU, one GPU, or many through ``torchrun``.

    run = pretrain(load_method("hico", ["data.path=data_samples"]), out="runs/hico")

Each step: a batch of uint8 frames comes from the cache (a DataLoader over :class:`PairDataset`), is augmented
on the device with a generator seeded by (seed, epoch, step, rank), both views go through the model in one
forward (bf16 autocast on CUDA), every loss term is computed on the embeddings gathered from all ranks, and one
optimizer step follows. All randomness after model initialisation is a pure function of (seed, epoch, step),
so a resumed run, mid-epoch or not, draws exactly the pairs and augmentations of an uninterrupted one: a
checkpoint needs no RNG state, and loads with ``weights_only=True``.

Every epoch: a k-NN accuracy per level (frozen pooled features of held-out videos against those of training
videos), the contrastive loss on held-out pairs (the authors' checkpoint criterion, for best.pt), last.pt. The
k-NN features of epoch 0, of powers of two and of the last epoch stay in ``features/epoch_NNNN.npz``
(:class:`hico.eval.features.Features`), for the app's maps of how the levels separate during training; the
backbone + FPN weights of those epochs stay in ``checkpoints/epoch_NNNN.pt`` (``backbone.pt``'s format, loaded
by :func:`hico.models.resolve_backbone`; ``train.epoch_checkpoints``), with or without k-NN or held-out videos.

At the start, ``labelled_videos.json`` records the videos whose labels the loss uses (softened CE: a
``data.label_rate`` share of the training videos) and the videos trained on (:mod:`hico.train.labelled`), so that
``hico finetune`` / ``hico probe`` never test this backbone on a video whose label it has seen.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hico import dist
from hico.config import MethodConfig, method_from_dict, resolve_classes
from hico.data import VideoDataset, scan
from hico.data.augment import BatchAugment
from hico.data.cache import default_cache_dir
from hico.data.pairs import PairDataset, make_views
from hico.engine import (
    NonFiniteLossError,
    flush_subnormals,
    forward_views,
    pair_similarities,
    train_step,
    trainable_parameters,
)
from hico.io import DiskFullError
from hico.methods import build_method
from hico.models import HiCoNet
from hico.models.checkpoint import export_backbone, unwrap
from hico.train.labelled import pretraining_split, training_labels, write_record
from hico.train.rundir import RunDir, RunFileError, load_checkpoint, save_checkpoint
from hico.train.sampler import EpochBatchSampler

SUBNORMAL_EVERY = 50
"""On a CPU, the optimizer steps between two flushes of subnormal weights (:func:`hico.engine.flush_subnormals`)."""


class _Stop(Exception):
    """Ctrl-C or SIGTERM arrived: the step in flight is finished, then the run saves and stops."""


def pretrain(
    cfg: MethodConfig | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool | None = None,
    start: str = "last",
) -> RunDir:
    """Pretrain a method and return its run directory.

    Args:
        cfg: the resolved method (``cfg.data.path`` names the videos). Ignored with ``resume``.
        out: a new run directory (refused if it holds anything).
        resume: an existing run directory to continue from its ``checkpoints/last.pt``.
        progress: progress bars (default: when stderr is a terminal; plain lines otherwise).
        start: with ``resume``, the checkpoint to continue from: ``last`` or ``best`` (``checkpoints/best.pt``,
            when last.pt is unreadable).
    """
    device = dist.setup(device=None if cfg is None else cfg.train.device)
    run = _open_run(cfg, out, resume, start)
    try:
        cfg = method_from_dict(run.read_config(), str(run.config_path))
        try:
            trainer = Trainer(cfg, run, device, progress=sys.stderr.isatty() if progress is None else progress)
        except BaseException as e:  # a new run that fails in its setup says so (the app shows it; --out is reusable)
            if resume is None and dist.is_main():
                run.set_status("failed", error=_setup_error(e))
            raise
        trainer.fit(resume=resume is not None)
    finally:
        if dist.is_main():
            run.release()
        dist.cleanup()
    return run


def _open_run(cfg: MethodConfig | None, out, resume, start: str = "last") -> RunDir:
    if (out is None) == (resume is None):
        raise ValueError("give exactly one of out (a new run directory) and resume (an existing one)")
    if resume is not None:
        if dist.is_main():
            run = RunDir.open_existing(resume, start)
        else:
            run = RunDir(Path(resume))
            run.start = run.checkpoints / f"{start}.pt"
    else:
        if cfg.data.path is None:
            raise ValueError("no data: pass --data PATH (or set data.path)")
        videos = scan(cfg.data.path)  # a missing or empty dataset fails here, before the run directory is made
        cfg = resolve_classes(cfg, videos.classes, str(cfg.data.path))  # auto -> the data's classes, in config.yaml
        _check_setup(cfg, videos)  # so do settings that do not fit the dataset's listing
        config = cfg.to_dict()
        config["data"]["path"] = str(Path(cfg.data.path).expanduser().resolve())
        run = RunDir.create(out, config) if dist.is_main() else RunDir(Path(out))
    dist.barrier()
    return run


def _check_setup(cfg: MethodConfig, videos: VideoDataset) -> None:
    """Raise ValueError for settings that do not fit the dataset, as far as its listing (not yet decoded) shows:
    a batch larger than an epoch's training pairs (a wrong ``model.num_classes``: :func:`resolve_classes`)."""
    t = cfg.train
    train_idx, _ = _split(videos, t)
    EpochBatchSampler(len(train_idx) * t.pairs_per_video, t.batch_size, world=dist.world_size())  # raises


def _setup_error(e: BaseException) -> str:
    """The one line that status.json keeps for a run that failed in its setup."""
    if isinstance(e, KeyboardInterrupt):
        return "stopped by the user before training started: nothing to resume, start it anew"
    return f"{type(e).__name__}: {e}"


def _split(videos: VideoDataset, t) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and held-out videos (:func:`hico.train.labelled.pretraining_split`)."""
    return pretraining_split(videos.labels, videos.groups, len(videos.classes), t.holdout, t.seed)


class Trainer:
    """The state of one pretraining run: data, model, optimizer, schedule, position. See :func:`pretrain`."""

    def __init__(self, cfg: MethodConfig, run: RunDir, device: torch.device, progress: bool = False) -> None:
        self.cfg, self.run, self.device, self.progress = cfg, run, device, progress
        t = cfg.train
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = dist.is_main()
        self.autocast = (
            torch.bfloat16 if (t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")) else None
        )
        self.channels_last = device.type == "cuda" if t.channels_last == "auto" else bool(t.channels_last)
        if device.type == "cuda":  # fixed input shapes: let cuDNN pick its fastest convolutions once
            torch.backends.cudnn.benchmark = True

        self.videos, self.train_idx, self.holdout_idx = self._load_data()
        self._check_labels()
        train_videos = self.videos.subset(self.train_idx)
        labels = training_labels(cfg, self.videos.labels[self.train_idx])
        if self.main:  # which videos' labels the loss uses, and which it trains on: for honest evaluation
            ids = np.array([v.video_id for v in train_videos.videos], dtype=object)
            write_record(run.root, cfg.data.path, ids[labels >= 0].tolist(), ids.tolist())
        self.pair_sampler = cfg.data.sampler()
        self.pairs = PairDataset(
            train_videos, self.pair_sampler, labels, seed=t.seed, samples_per_video=t.pairs_per_video
        )
        workers = _auto_workers(device) if t.workers == -1 else t.workers
        # the epoch travels with every index, so workers forked once (persistent) draw each epoch's own pairs
        self.batches = EpochBatchSampler(
            len(self.pairs), t.batch_size, seed=t.seed, rank=self.rank, world=self.world, with_epoch=workers > 0
        )
        self.loader = torch.utils.data.DataLoader(
            self.pairs,
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None,
        )
        self.augment = BatchAugment(cfg.augment).to(device)

        torch.manual_seed(t.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        model = HiCoNet(cfg.model).to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.method = build_method(cfg, model).to(device)  # the loss and its state (key encoder, queue, ...)
        params = [*model.parameters(), *trainable_parameters(self.method)]
        self.optimizer = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        self.steps_per_epoch = self.batches.steps_per_epoch
        total = t.epochs * self.steps_per_epoch
        warm = min(t.constant_epochs * self.steps_per_epoch, total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _constant_then_cosine(s, warm, total)
        )
        # Only what the loss reads is computed; an ablation row leaves heads (and the classifier) without a
        # gradient, which DDP must then look for (without, step 2 fails: "Expected to have finished reduction").
        self.outputs = self.method.outputs
        unused = sorted(set(model.output_names) - set(self.outputs))
        sync_bn, note = dist.sync_bn_choice(t.sync_bn, t.compile, device, self.world)
        if note:
            self._say(note)
        self.train_model: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync_bn else model
        if self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=ids, find_unused_parameters=bool(unused)
            )
        if t.compile:
            self.train_model = torch.compile(self.train_model)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best = math.inf
        self.sums: dict[str, float] = defaultdict(float)  # running sums of the epoch's terms (kept on resume)

    # ----------------------------------------------------------------------------------------------- data
    def _load_data(self) -> tuple[VideoDataset, np.ndarray, np.ndarray]:
        cfg = self.cfg
        cache = default_cache_dir()
        if not self.main:
            dist.barrier()  # rank 0 decodes into the disk cache first; the others then read it
        videos = scan(cfg.data.path, size=cfg.data.working_size, cache_dir=cache)
        videos.load_all(progress=self.progress and self.main)
        if self.main:
            dist.barrier()
        videos.require_videos()
        for path, reason in videos.unreadable:
            self._say(f"skipped unreadable {path}: {reason}")
        for _, reason in videos.refused:
            self._say(f"skipped {reason}")
        train_idx, holdout_idx = _split(videos, cfg.train)
        return videos, train_idx, holdout_idx

    def _check_labels(self) -> None:
        """The readable videos must still have model.num_classes classes (an unreadable class can drop out)."""
        resolve_classes(self.cfg, self.videos.classes, str(self.cfg.data.path))

    # ------------------------------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        """Everything needed to continue: weights, optimizer, schedule, position (RNG is derived from it)."""
        return {
            "model": unwrap(self.model).state_dict(),
            "model_config": self.cfg.model.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best": self.best,
            "epoch_sums": dict(self.sums),
            "config": self.cfg.to_dict(),
            "method": self.method.state_dict(),  # MoCo's key encoder and queue, BYOL's predictor and target, ...
        }

    def save(self, best: bool = False) -> None:
        """Write last.pt (and best.pt) atomically, on rank 0."""
        if not self.main:
            return
        state = self.state()
        save_checkpoint(state, self.run.last)
        if best:
            save_checkpoint(state, self.run.best)

    def save_epoch_checkpoint(self) -> None:
        """At a snapshot epoch, write ``checkpoints/epoch_NNNN.pt`` (backbone + FPN, atomically, on rank 0).

        Called before last.pt is written, so that a run killed in between redoes the epoch on resume and writes
        the file again (the same weights) rather than skipping it.
        """
        t = self.cfg.train
        if self.main and t.epoch_checkpoints and _snapshot_epoch(self.epoch, t.epochs):
            export_backbone(self.model, self.run.epoch_checkpoint(self.epoch))

    def restore(self) -> None:
        """Continue from last.pt (or the run's ``start`` checkpoint): weights, optimizer, schedule and position.

        An unreadable checkpoint raises :class:`RunFileError`, one line naming it and, when best.pt loads,
        how to resume from that one instead.
        """
        try:
            ckpt = load_checkpoint(self.run.start)
        except RunFileError as e:
            raise RunFileError(f"{e}; {self.run.resume_hint()}") from e
        unwrap(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.method.load_state_dict(_method_state(ckpt))
        self.epoch, self.step_in_epoch = int(ckpt["epoch"]), int(ckpt["step_in_epoch"])
        self.global_step, self.best = int(ckpt["global_step"]), float(ckpt["best"])
        self.sums = defaultdict(float, ckpt.get("epoch_sums", {}))
        if self.main:
            self.run.truncate_metrics(self.global_step)
        self._say(f"resumed from {self.run.start} at epoch {self.epoch + 1}, step {self.global_step}")

    # ---------------------------------------------------------------------------------------------- loop
    def fit(self, resume: bool = False) -> None:
        """Train to the last epoch (or ``max_steps``), handling interrupts, failures and non-finite losses."""
        if resume:
            self.restore()
        t = self.cfg.train
        self._status("running")
        self._stop_requested = False
        # Ctrl-C / SIGTERM end the current step, then stop cleanly; a second one stops at once. Every rank
        # listens (torchrun forwards the signal to all) and the flag is all-reduced (:meth:`_stopping`).
        handlers = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.epoch == 0 and self.step_in_epoch == 0 and self.main:
                record = {"kind": "epoch", "epoch": 0, "step": 0, **self.evaluate()}  # before training
                self.save_epoch_checkpoint()
                self.run.log(record)
                self._say(f"before training:{_monitor(record)}")
            while self.epoch < t.epochs and not self._done():
                if self._stopping():
                    raise _Stop
                self.train_epoch()
                if self.step_in_epoch < self.steps_per_epoch:  # stopped by max_steps mid-epoch
                    break
                self.epoch, self.step_in_epoch = self.epoch + 1, 0
                self.end_epoch()
            self.save()
            if self.main:
                unwrap(self.model).export_backbone(self.run.backbone)
            self._status("finished")
        except _Stop:  # between two steps: the state is consistent, save it
            self.save()
            self._status("interrupted", error="stopped by the user; continue with --resume")
            self._say(f"interrupted: saved {self.run.last}; continue with: hico pretrain --resume {self.run.root}")
            raise KeyboardInterrupt from None
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step: keep the last checkpoint as it is
            self._status(
                "interrupted", error="stopped at once by the user; continue with --resume from the last checkpoint"
            )
            raise
        except BaseException as e:
            plain = isinstance(e, (NonFiniteLossError, DiskFullError))  # their message says it all
            self._status("failed", error=str(e) if plain else f"{type(e).__name__}: {e}")
            raise
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _request_stop(self, signum, frame) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True
        self._say("stopping after this step (press Ctrl-C again to stop at once, without saving)")

    def _stopping(self) -> bool:
        """Whether a stop was requested on ANY rank (one tiny all-reduce under torchrun), so that every rank
        stops after the same step and rank 0 saves: a rank that stopped alone would leave the others waiting."""
        return dist.any_rank(self._stop_requested)

    def _done(self) -> bool:
        return bool(self.cfg.train.max_steps) and self.global_step >= self.cfg.train.max_steps

    def train_epoch(self) -> None:
        """Run the rest of the current epoch (from ``step_in_epoch``)."""
        from tqdm.auto import tqdm

        t = self.cfg.train
        self.train_model.train()
        self.pairs.set_epoch(self.epoch)
        self.batches.set_epoch(self.epoch, self.step_in_epoch)
        if self.step_in_epoch == 0:
            self.sums = defaultdict(float)
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            desc=f"epoch {self.epoch + 1}/{t.epochs}",
            unit="step",
            disable=not (self.progress and self.main),
            dynamic_ncols=True,
        )
        tick, seen = time.perf_counter(), 0
        for batch in self.loader:
            terms = self.step(batch)
            self.step_in_epoch += 1
            self.global_step += 1
            seen += t.batch_size
            for k, v in terms.items():
                self.sums[k] += v
            rate = seen / (time.perf_counter() - tick)
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total']:.3f}", pairs_s=f"{rate:.1f}")
            if self.global_step % t.log_every == 0 and self.main:
                record = {"kind": "step", "epoch": self.epoch + 1, "step": self.global_step, "lr": self.lr, **terms}
                self.run.log({**record, "pairs_per_s": rate})
                if not self.progress:
                    self._say(
                        f"epoch {self.epoch + 1} step {self.global_step} loss {terms['total']:.4f} {rate:.1f} pairs/s"
                    )
            if t.checkpoint_every and self.global_step % t.checkpoint_every == 0:
                self.save()
            if self._stopping():
                raise _Stop
            if self._done():
                break
        bar.close()
        n = max(1, self.step_in_epoch)
        self.epoch_means = {f"train_{k}": v / n for k, v in self.sums.items()}
        self.epoch_rate = seen / max(1e-9, time.perf_counter() - tick)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, batch: dict) -> dict[str, float]:
        """One optimizer step on a batch from the loader; returns the loss terms as floats."""
        gen = torch.Generator(self.device).manual_seed(
            _mix(self.cfg.train.seed, self.epoch, self.step_in_epoch, self.rank)
        )
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.no_grad():
            v1, v2, *negatives = make_views(batch, self.pair_sampler, self.augment, gen)  # UCL: + negatives
        if self.channels_last:
            v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
        try:
            terms = train_step(
                self.method, self.train_model, self.optimizer, v1, v2, batch["label"], self._loss_weights(batch),
                negatives[0] if negatives else None, autocast_dtype=self.autocast,
            )  # fmt: skip
        except NonFiniteLossError as e:
            kept = (
                f", the last good checkpoint is kept ({self.run.last})"
                if self.run.last.exists()
                else " before its first checkpoint, so there is nothing to resume: start it anew (a lower train.lr "
                "often helps)"
            )
            on = "" if e.rank is None else f" on rank {e.rank}"
            raise NonFiniteLossError(
                f"non-finite loss{on} at step {self.global_step + 1} (epoch {self.epoch + 1}): term {e.term!r} is "
                f"{e.value}; stopped{kept}", e.term, e.value, e.rank,
            ) from None  # fmt: skip
        self.scheduler.step()
        if self.device.type == "cpu" and self.global_step % SUBNORMAL_EVERY == 0:
            flush_subnormals(self.optimizer)  # subnormal weights slow a CPU several times (hico.engine)
        return terms

    def end_epoch(self) -> None:
        """Evaluate, keep the epoch's snapshot, log the epoch record, write last.pt (and best.pt when the
        held-out loss improves)."""
        record = {"kind": "epoch", "epoch": self.epoch, "step": self.global_step, "lr": self.lr}
        record.update(self.epoch_means)
        record["pairs_per_s"] = self.epoch_rate
        record.update(self.evaluate())
        self.save_epoch_checkpoint()
        criterion = record.get("holdout_con", record.get("train_total", math.inf))
        improved = criterion < self.best
        if improved:
            self.best = criterion
        self.save(best=improved)
        if self.main:
            self.run.log(record)
            self._say(
                f"epoch {self.epoch}/{self.cfg.train.epochs}: loss {record.get('train_total', float('nan')):.4f}"
                f"{_monitor(record)}"
            )
        self._status("running")

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out contrastive loss and per-level k-NN accuracy (rank 0; empty without a held-out split)."""
        t = self.cfg.train
        out: dict = {}
        if not self.main or len(self.holdout_idx) == 0:
            return out
        model = unwrap(self.model)
        model.eval()
        self.method.eval()
        try:
            out.update(self._holdout(model))
            if t.knn_every and (self.epoch % t.knn_every == 0 or self.epoch == t.epochs):
                from hico.eval.features import extract_features
                from hico.eval.knn import level_knn_accuracy

                feats = extract_features(
                    model, self.videos, size=self.cfg.augment.size, per_video=t.knn_frames_per_video,
                    batch_size=64, device=self.device, augment=self.cfg.augment,
                )  # fmt: skip
                acc = level_knn_accuracy(feats, self.train_idx, self.holdout_idx, k=t.knn_k)
                out.update({f"knn_{level}": float(v) for level, v in acc.items()})
                if _snapshot_epoch(self.epoch, t.epochs):  # for maps of how the levels separate while training
                    feats.meta.update(epoch=self.epoch, holdout=[int(i) for i in self.holdout_idx])
                    feats.save(self.run.features / f"epoch_{self.epoch:04d}.npz")
        finally:
            model.train()
            self.method.train()
        return out

    @torch.no_grad()
    def _holdout(self, model: nn.Module) -> dict[str, float]:
        """On fixed pairs of held-out videos, model in eval mode: ``holdout_con``, the mean held-out criterion of
        the method (HiCo: ``con``, without labels; see each method's ``holdout_loss``), and the mean cosine
        similarity of the global embeddings of the two frames of a pair (``holdout_pos_sim``) and of two frames
        of different pairs (``holdout_neg_sim``): learning pulls the first up and keeps the second down."""
        videos = self.videos.subset(self.holdout_idx)
        per_video = max(1, math.ceil(2 * self.cfg.train.batch_size / len(videos)))
        pairs = PairDataset(videos, self.pair_sampler, None, seed=self.cfg.train.seed + 1, samples_per_video=per_video)
        loader = torch.utils.data.DataLoader(
            pairs, batch_size=self.cfg.train.batch_size, drop_last=len(pairs) > self.cfg.train.batch_size
        )
        gen = torch.Generator(self.device).manual_seed(self.cfg.train.seed + 1)
        total, pos, neg, n = 0.0, 0.0, 0.0, 0
        has_global = "global" in model.output_names
        for batch in loader:
            if len(batch["frames"]) < 2:
                continue
            batch = {k: v.to(self.device) for k, v in batch.items()}
            v1, v2, *_ = make_views(batch, self.pair_sampler, self.augment, gen)
            with torch.autocast(
                self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None
            ):
                total += float(self.method.holdout_loss(model, v1, v2, self._loss_weights(batch)))
                if has_global:
                    z1, z2 = (z["global"] for z in forward_views(model, v1, v2, ("global",)))
            if has_global:
                p, q = pair_similarities(z1, z2)
                pos, neg = pos + p, neg + q
            n += 1
        n = max(n, 1)
        sims = {"holdout_pos_sim": pos / n, "holdout_neg_sim": neg / n} if has_global else {}
        return {"holdout_con": total / n, **sims}

    # ------------------------------------------------------------------------------------------- helpers
    def _loss_weights(self, batch: dict) -> torch.Tensor | None:
        """The pairs' loss weights (IVPP), or None when the sampler's weight is not a loss weight."""
        return batch["weight"] if getattr(self.pair_sampler, "loss_weights", False) else None

    def _status(self, state: str, **fields) -> None:
        """Write status.json (rank 0); failing to, a failed or interrupted run only says so (its error wins)."""
        if not self.main:
            return
        try:
            self.run.set_status(
                state, epoch=self.epoch, epochs=self.cfg.train.epochs, step=self.global_step,
                steps_per_epoch=self.steps_per_epoch, **fields,
            )  # fmt: skip
        except OSError as e:
            if state not in ("failed", "interrupted"):
                raise
            self._say(f"could not write {self.run.status_path}: {e}")

    def _say(self, msg: str) -> None:
        if self.main:
            print(msg, file=sys.stderr, flush=True)


def _auto_workers(device: torch.device) -> int:
    """``train.workers=-1``: none on CPU (frames come from the cache in the training process); on CUDA this
    node's CPU cores shared among its ranks (torchrun's ``LOCAL_WORLD_SIZE``), at most 8. Not the torch thread
    count: torchrun sets ``OMP_NUM_THREADS=1``, which would leave one worker per rank."""
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


def _method_state(ckpt: dict) -> dict:
    """The method's state in ``ckpt``; checkpoints written before methods were modules kept the loss's buffers
    under "loss" and MoCo's key encoder under "key_model": the same tensors, named without their prefix."""
    if "method" in ckpt:
        return ckpt["method"]
    return {f"{part}.{k}": v for part in ("loss", "key_model") for k, v in ckpt.get(part, {}).items()}


def _snapshot_epoch(epoch: int, epochs: int) -> bool:
    """Epochs whose k-NN features (``RUNDIR/features/``) and backbone + FPN weights (``RUNDIR/checkpoints/
    epoch_NNNN.pt``) are kept: 0 (before training), powers of two, the last.

    About log2(epochs) of each: a 300-epoch run on COVID-BLUES keeps 11 feature files of about 4 MB and 11
    checkpoints of 52.9 MB (ResNet-18 + FPN: 13.2 M parameters in fp32), about 580 MB of checkpoints
    (``train.epoch_checkpoints=false`` keeps none).
    """
    return epoch == epochs or epoch & (epoch - 1) == 0


def _monitor(record: dict) -> str:
    """`` holdout loss 4.1 knn_local=0.812 ...``: what an epoch record holds of the held-out monitor (nothing
    without held-out videos)."""
    parts = [f"holdout loss {record['holdout_con']:.4f}"] if "holdout_con" in record else []
    parts += [f"{k}={v:.3f}" for k, v in record.items() if k.startswith("knn_") and v is not None]
    return "".join(f" {p}" for p in parts)


def _constant_then_cosine(step: int, constant: int, total: int) -> float:
    """LR factor: 1 for ``constant`` steps, then a cosine decay to 0 at ``total`` steps."""
    if step < constant or total <= constant:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - constant) / (total - constant))))


def _mix(*ints: int) -> int:
    """A 63-bit seed from several integers (SeedSequence mixing: nearby inputs give unrelated seeds)."""
    return int(np.random.SeedSequence(list(ints)).generate_state(1, np.uint64)[0] >> np.uint64(1))
