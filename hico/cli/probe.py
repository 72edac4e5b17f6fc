"""``hico probe``: linear probe and k-NN on frozen features, per level (:mod:`hico.eval.probe`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.cli.args import C_arg
from hico.cli.features import add_common_arguments, features_from_args


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico probe`` to the ``hico`` sub-commands."""
    p = sub.add_parser(
        "probe",
        help="linear probe and k-NN on frozen features, per level, grouped k-fold over videos",
        description="Linear probe and k-NN on frozen features, per level, with grouped stratified k-fold over videos.",
    )
    add_common_arguments(p)
    p.add_argument("--folds", type=int, default=5, help="number of grouped, stratified folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default 0)")
    p.add_argument("--k", type=int, default=10, help="neighbours of the k-NN classifier (default 10)")
    p.add_argument("--C", type=C_arg, default=1.0, metavar="C|auto",
                   help="inverse L2 strength of the logistic regression (default 1); auto: chosen per fold from "
                   "0.001-10 by a grouped cross-validation inside the training videos")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON to this file")
    p.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    """``hico probe``: extract features, probe every level, print the table, optionally write JSON."""
    import time

    from hico.eval.probe import format_table, probe
    from hico.io import write_json

    feats, _, timing = features_from_args(args)
    t0 = time.perf_counter()
    result = probe(feats, folds=args.folds, seed=args.seed, k=args.k, C=args.C, backbone=args.backbone, data=args.data)
    timing["probe_s"] = time.perf_counter() - t0
    result["timing"] = timing
    print(format_table(result))
    print(
        f"time: load {timing['load_s']:.1f} s, features {timing['features_s']:.1f} s ({timing['device']}), "
        f"probe {timing['probe_s']:.1f} s"
    )
    if args.out is not None:
        print(f"wrote {write_json(args.out, result)}")
    return 0
