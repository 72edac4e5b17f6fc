"""Batches for pretraining: one seeded permutation per epoch, cut into global batches, each rank its slice."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields lists of dataset indices, one list per step, for one process of ``world`` processes.

    Epoch ``e`` shuffles the ``n`` items with a generator seeded by ``(seed, e)``, cuts the permutation into
    global batches of ``batch_size`` (the last, incomplete one is dropped: contrastive losses need equal-size
    batches on every rank), and gives rank ``r`` rows ``[r * b, (r + 1) * b)`` of each, with
    ``b = batch_size // world``. So the global batch, and therefore training, does not depend on the number of
    processes. ``set_epoch(e, start)`` skips the first ``start`` batches: a run resumed mid-epoch continues
    exactly where it stopped. With ``with_epoch``, each index comes as ``(epoch, index)``: a dataset in a persistent
    data-loader worker (forked once, so deaf to ``set_epoch`` calls in the main process) still draws that epoch's
    pairs (:meth:`hico.data.pairs.PairDataset.__getitem__` takes both forms).
    """

    def __init__(
        self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, with_epoch: bool = False
    ) -> None:
        if batch_size % world:
            raise ValueError(f"train.batch_size ({batch_size}) must be divisible by the number of processes ({world})")
        if n < batch_size:
            raise ValueError(
                f"only {n} training pairs per epoch for a batch of {batch_size}: "
                "raise train.pairs_per_video or lower train.batch_size"
            )
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.start, self.with_epoch = 0, 0, with_epoch

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch."""
        return self.n // self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and the first batch to yield."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        per = self.batch_size // self.world
        for step in range(self.start, self.steps_per_epoch):
            batch = perm[step * self.batch_size : (step + 1) * self.batch_size]
            rows = batch[self.rank * per : (self.rank + 1) * per].tolist()
            yield [(self.epoch, i) for i in rows] if self.with_epoch else rows
