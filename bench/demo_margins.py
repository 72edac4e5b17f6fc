"""What the demo preset guarantees: the figures behind the margins of tests/test_workflow.py, over several seeds.

    python bench/demo_margins.py --seeds 0 1 2 3 [--out runs/demo-margins]     # one demo run per seed, in turn
    python bench/demo_margins.py --runs RUNDIR [RUNDIR ...]                   # runs made before

A demo run is deterministic on one CPU, not across CPUs (AVX2 and AVX-512 kernels round differently), so a test
may only assert what holds for every seed, with a margin: for each run this prints the train_total drop (epoch 1
-> last), the holdout_con drop (before training -> last), the mean rise of the k-NN accuracy of the three levels
(before training -> last), how far the contrastive loss ends below its chance level (1 - con / chance), the gap
between the cosine similarity of held-out positive pairs and negatives, then the worst of each over the runs. About
2 minutes a run on a free laptop CPU.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hico.cli import main as hico
from hico.train.rundir import read_metrics

LEVELS = ("local", "medium", "global")


def chance(run: Path) -> float:
    """The chance level of the run's contrastive loss ``con`` (hico.methods.chance_level)."""
    from hico.methods import chance_level
    from hico.train.rundir import read_config

    return chance_level(read_config(run), "con")


def figures(run: Path) -> dict[str, float]:
    """The three figures of one finished demo run (and whether every logged epoch value is finite)."""
    epochs = [r for r in read_metrics(run) if r["kind"] == "epoch"]
    before, first, last = epochs[0], epochs[1], epochs[-1]
    return {
        "train_drop": first["train_total"] - last["train_total"],
        "holdout_drop": before["holdout_con"] - last["holdout_con"],
        "knn_rise": sum(last[f"knn_{v}"] - before[f"knn_{v}"] for v in LEVELS) / len(LEVELS),
        "below_chance": 1 - last["train_con"] / chance(run),  # how far the loss ends below its chance level
        "sim_gap": last["holdout_pos_sim"] - last["holdout_neg_sim"],  # positives vs negatives, held out
        "finite": float(all(math.isfinite(x) for r in epochs for x in r.values() if isinstance(x, float))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[])
    p.add_argument("--runs", type=Path, nargs="*", default=[])
    p.add_argument("--out", type=Path, default=Path("runs/demo-margins"))
    args = p.parse_args()
    runs = list(args.runs)
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        argv = ["pretrain", "--preset", "demo", "--set", f"train.seed={seed}", "--out", str(out), "--no-progress"]
        if hico(argv) != 0:
            raise SystemExit(f"the demo run of seed {seed} failed")
        runs.append(out)
    if not runs:
        raise SystemExit("give --seeds or --runs")
    rows = [(run, figures(run)) for run in runs]
    keys = ("train_drop", "holdout_drop", "knn_rise", "below_chance", "sim_gap", "finite")
    print(f"{'run':<40}" + "".join(f"{k:>14}" for k in keys))
    for run, f in rows:
        print(f"{str(run):<40}" + "".join(f"{f[k]:>14.3f}" for k in keys))
    print(f"{'worst':<40}" + "".join(f"{min(f[k] for _, f in rows):>14.3f}" for k in keys))


if __name__ == "__main__":
    main()
