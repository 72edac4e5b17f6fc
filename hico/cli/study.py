"""``hico study``: the label-efficiency study (:mod:`hico.study`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.cli.args import C_arg


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico study`` to the ``hico`` sub-commands."""
    p = sub.add_parser(
        "study",
        help="what pretraining buys when labels are scarce: pretrain methods once, evaluate at label fractions",
        description="Pretrain every method with the same budget (or take a run directory / weights file as it "
        "is; 'random' is no pretraining), then evaluate each on the evaluation videos with the same "
        "patient-grouped folds, at each label fraction and protocol. Writes DIR/study.csv and DIR/study.json; "
        "run it again to resume.",
    )
    p.add_argument("--methods", nargs="+", required=True, metavar="METHOD",
                   help="method names (hico simclr uscl ucl ivpp mocov2 byol ...), random / imagenet, run "
                   "directories or weights files")  # fmt: skip
    p.add_argument("--pretrain-data", type=Path, help="folder of videos to pretrain on (needed by method names)")
    p.add_argument("--eval-data", type=Path, required=True, help="labelled folder of videos to evaluate on")
    p.add_argument("--classes", nargs="+", metavar="CLASS", help="keep these classes of the evaluation data")
    p.add_argument("--label-fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 1.0], metavar="F",
                   help="fractions of each fold's training videos that keep their labels (default 0.05 0.1 0.25 1)")  # fmt: skip
    p.add_argument("--protocols", nargs="+", default=["knn", "probe", "finetune"], choices=["knn", "probe", "finetune"],
                   help="evaluation protocols (default: all three)")  # fmt: skip
    p.add_argument("--folds", type=int, default=5, help="patient-grouped, stratified folds (default 5)")
    p.add_argument("--out", type=Path, required=True, help="the study folder (reused to resume)")
    p.add_argument("--seed", type=int, default=0, help="seeds pretraining, folds and label subsets (default 0)")
    b = p.add_argument_group("pretraining budget (the same for every method)")
    b.add_argument("--size", type=int, default=64, help="image side in pixels, also for evaluation (default 64)")
    b.add_argument("--batch-size", type=int, default=32, help="pairs per step (default 32)")
    b.add_argument("--epochs", type=int, default=10, help="pretraining epochs (default 10)")
    b.add_argument("--pairs-per-video", type=int, default=4, help="pairs drawn per video and epoch (default 4)")
    b.add_argument("--lr", type=float, default=None, help="learning rate (default: each method's own)")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="further pretraining setting for every method, e.g. --set model.init=imagenet")  # fmt: skip
    e = p.add_argument_group("evaluation")
    e.add_argument("--level", choices=["local", "medium", "global"], default="global",
                   help="the frozen features' level for knn and probe (default global)")  # fmt: skip
    e.add_argument("--frames-per-video", type=int, default=8, help="frames per video for features and tests (8)")
    e.add_argument("--k", type=int, default=10, help="k-NN neighbours (default 10)")
    e.add_argument("--C", type=C_arg, default=None, metavar="C|auto",
                   help="inverse L2 strength of the linear probe; auto (default): chosen per fold from "
                   "0.001-10 by a grouped cross-validation inside the labelled videos")  # fmt: skip
    e.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs per fold (default 10)")
    e.add_argument("--finetune-frames-per-video", type=int, default=8, help="training frames per video (8)")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of the intervals (1000)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress lines or bars")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    """Run or resume the study, print its table."""
    from hico.study import Study, StudyConfig, format_paired, format_table

    cfg = StudyConfig(
        methods=list(args.methods),
        eval_data=str(args.eval_data),
        out=str(args.out),
        pretrain_data=None if args.pretrain_data is None else str(args.pretrain_data),
        classes=args.classes,
        label_fractions=list(args.label_fractions),
        protocols=list(dict.fromkeys(args.protocols)),
        folds=args.folds,
        seed=args.seed,
        size=args.size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        pairs_per_video=args.pairs_per_video,
        lr=args.lr,
        overrides=list(args.overrides),
        level=args.level,
        frames_per_video=args.frames_per_video,
        k=args.k,
        C=args.C,
        finetune_epochs=args.finetune_epochs,
        finetune_frames_per_video=args.finetune_frames_per_video,
        bootstrap=args.bootstrap,
        device=args.device,
    )
    study = Study(cfg, progress=not args.no_progress)
    rows = study.run()
    print(format_table(rows))
    paired = format_paired(study.state.get("paired", []))
    if paired:
        print(paired)
    print(f"wrote {Path(args.out) / 'study.csv'} and {Path(args.out) / 'study.json'}")
    return 0
