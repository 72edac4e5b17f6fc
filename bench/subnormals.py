"""How much subnormal weights slow a CPU step, and what ``hico.engine.flush_subnormals`` gives back.

    python bench/subnormals.py [--threads 2] [--size 64] [--batch 64] [--checkpoint RUNDIR/checkpoints/last.pt]

Times the forward and backward of a ResNet-18 (the SimCLR network) on a batch of random images three ways, in one
run: fresh weights; the weights of its last block shrunk to 1e-36 of their values, as weight decay leaves a block
whose gradients vanished over a long run (or, with --checkpoint, a real run's weights); and those weights after
``flush_subnormals``. Prints seconds per step and the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch

from hico.config import load_method
from hico.engine import flush_subnormals
from hico.models import HiCoNet


def seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Mean seconds of a forward and backward of ``model`` on ``x`` (after one warm-up)."""

    def once():
        out = model(x)
        sum(v.float().pow(2).mean() for v in out.values() if torch.is_tensor(v)).backward()

    once()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64, help="images per step (2 views x 32 pairs)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--checkpoint", help="a run's checkpoint (last.pt) to time instead of shrunk weights")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_method("simclr", ["model.init=random"])
    x = torch.randn(args.batch, 3, args.size, args.size)

    model = HiCoNet(cfg.model).train()
    fresh = seconds(model, x, args.repeats)
    if args.checkpoint:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        what = args.checkpoint
    else:
        with torch.no_grad():
            for name, w in model.named_parameters():
                if name.startswith("backbone.layer4.1."):
                    w.mul_(1e-36)
        what = "last block x 1e-36"
    slow = seconds(model, x, args.repeats)
    n = flush_subnormals(torch.optim.SGD(model.parameters(), lr=0.0))
    flushed = seconds(model, x, args.repeats)
    print(f"{args.batch} images of {args.size} px, {args.threads} threads; forward + backward, s per step:")
    print(f"  fresh weights: {fresh:.3f}")
    print(f"  {what}: {slow:.3f} ({slow / fresh:.2f} x fresh)")
    print(f"  after flush_subnormals ({n:,} values set to 0): {flushed:.3f} ({slow / flushed:.2f} x faster)")


if __name__ == "__main__":
    main()
