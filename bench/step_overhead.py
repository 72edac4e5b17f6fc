"""Overhead of the HiCo objective: a full training step divided by a bare backbone+FPN step, one run.

    python bench/step_overhead.py [--pairs 16] [--size 224] [--reps 3] [--config hico]

- full step: ``hico.engine.train_step``, the trainer's step: for HiCo both views through HiCoNet in one forward
  (backbone, FPN, three heads, classifier), every HiCo term (3 peer, 2 cross, softened CE), backward, Adam step
  (``--config`` another method: that method's step);
- bare step: the same backbone+FPN on the same 2 x pairs images, a trivial loss (the mean of the pyramid maps
  the heads read), backward, Adam step.

Steps alternate (bare, full, bare, full, ...) after one warm-up each, and the medians are compared, so machine
noise hits both alike. Target: ratio <= 1.10 at 224 px.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hico.config import load_method, resolve_classes
from hico.engine import train_step, trainable_parameters
from hico.methods import build_method
from hico.models import HiCoNet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=16, help="positive pairs per step (2x images)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--config", default="hico")
    args = p.parse_args()

    cfg = resolve_classes(load_method(args.config, ["model.init=random"]), ["a", "b", "c"])  # auto: 3 classes
    torch.manual_seed(0)
    model = HiCoNet(cfg.model).train()
    method = build_method(cfg, model)
    opt = torch.optim.Adam([*model.parameters(), *trainable_parameters(method)], lr=3e-4, weight_decay=1e-4)
    v1, v2 = torch.randn(2, args.pairs, 3, args.size, args.size).unbind(0)
    labels = torch.randint(0, cfg.model.num_classes or 1, (args.pairs,))
    labels[::2] = -1  # half the pairs unlabelled, as in semi-supervised pretraining

    levels = sorted(set(model.sources.values()))  # the maps the heads read (c5 alone without an FPN)

    def bare() -> None:
        maps = model.forward_maps(torch.cat([v1, v2]))
        loss = sum(maps[level].mean() for level in levels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def full() -> None:
        train_step(method, model, opt, v1, v2, labels)

    times: dict[str, list[float]] = {"bare": [], "full": []}
    for rep in range(args.reps + 1):
        for name, fn in (("bare", bare), ("full", full)):
            t = time.perf_counter()
            fn()
            if rep > 0:  # the first round warms up allocator and kernels
                times[name].append(time.perf_counter() - t)
    bare_s, full_s = statistics.median(times["bare"]), statistics.median(times["full"])
    print(
        f"config {args.config}, {args.pairs} pairs ({2 * args.pairs} images) at {args.size} px, "
        f"{torch.get_num_threads()} threads, median of {args.reps}"
    )
    print(f"bare backbone+FPN step: {bare_s:.3f} s   full {cfg.name} step: {full_s:.3f} s")
    print(f"ratio full / bare: {full_s / bare_s:.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
