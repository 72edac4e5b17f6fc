"""``hico pretrain``: the command line of the trainer."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from hico.paths import SAMPLES
from hico.train.rundir import RESUMABLE

PRESETS: dict[str, dict] = {
    "demo": {
        "about": "HiCo on data_samples/ at 32 px, 360 steps, about 2 minutes on a laptop CPU: the loss falls well below "
        "its chance level, positive pairs pull apart from negatives, k-NN accuracy of held-out videos rises",
        "data": SAMPLES,
        "overrides": [  # the classroom scale: few pixels and many steps (at 64 px, 120 steps stayed at chance)
            "model.init=random",
            "augment.size=32",
            "data.working_size=64",
            "train.epochs=30",
            "train.batch_size=16",
            "train.pairs_per_video=8",
            "train.lr=0.003",
            "loss.temperature=0.2",
            "train.constant_epochs=0",
            "train.log_every=4",
            "train.holdout=0.34",
            "train.knn_frames_per_video=8",
        ],
    },
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico pretrain`` to the ``hico`` command's sub-commands."""
    p = sub.add_parser(
        "pretrain",
        help="pretrain a method on a folder of videos (CPU, GPU, or torchrun for many GPUs)",
        description="Pretrain a method. Under torchrun (torchrun --nproc_per_node=N -m hico.cli pretrain ...) "
        "it trains with DistributedDataParallel; negatives come from the global batch.",
    )
    p.add_argument("--config", default="hico", help="method name (see hico model summary --config all) or YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train.epochs=50 --set loss.lam=0.3 (repeatable)")  # fmt: skip
    p.add_argument("--data", type=Path, help="dataset folder (default with --preset demo: data_samples/)")
    p.add_argument(
        "--out", type=Path, help="new run directory (default: <runs>/<method>-<time>, <runs> being $HICO_RUNS or runs/)"
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), help=" ; ".join(f"{k}: {v['about']}" for k, v in PRESETS.items())
    )
    p.add_argument("--resume", type=Path, metavar="RUNDIR", help="continue a run from its checkpoints/last.pt")
    p.add_argument("--from", dest="start", choices=RESUMABLE, default="last",
                   help="with --resume: the checkpoint to continue from (best: checkpoints/best.pt, when last.pt "
                   "is unreadable; default last)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of progress bars")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Run ``hico pretrain``; returns 0 when the run finished."""
    from hico import dist
    from hico.config import load_method
    from hico.train.trainer import pretrain

    progress = False if args.no_progress else None
    if args.resume is not None:
        if args.data or args.out or args.preset or args.overrides or args.config != "hico":
            raise ValueError(
                "--resume continues a run with its own config.yaml: give no --config/--set/--data/--out/--preset"
            )
        run = pretrain(resume=args.resume, progress=progress, start=args.start)
        if _is_rank_zero():
            print(f"finished: {run.root}")
            _print_signs(run.root)
        return 0
    if args.start != "last":
        raise ValueError("--from chooses the checkpoint of a --resume: give --resume RUNDIR too")
    overrides = list(PRESETS[args.preset]["overrides"]) if args.preset else []
    data = args.data or (PRESETS[args.preset]["data"] if args.preset else None)
    if data is None:
        raise ValueError("no data: pass --data PATH (a folder of videos), or --preset demo")
    cfg = load_method(args.config, [*overrides, *args.overrides, f"data.path={data}"])
    out = args.out or dist.on_rank0(lambda: _new_run_dir(cfg.name), cfg.train.device)  # one folder for all ranks
    run = pretrain(cfg, out=out, progress=progress)
    if _is_rank_zero():
        print(f"finished: {run.root}\n  backbone: {run.backbone}\n  metrics:  {run.metrics_path}")
        _print_signs(run.root)
    return 0


def _print_signs(root: Path) -> None:
    """The four signs of learning of a run that held videos out (hico.eval.learned); nothing for one that did not."""
    from hico.eval.learned import format_signs, signs_of_learning

    signs = signs_of_learning(root)
    if signs["pos_sim"] is not None or signs["held_out"] is not None:
        print(format_signs(signs))


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _new_run_dir(name: str) -> Path:
    """A free folder name ``<method>-<time>`` under the runs folder the app lists (``$HICO_RUNS`` or ``runs/``)."""
    from hico.runs import runs_root

    base = runs_root() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path
