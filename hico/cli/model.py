"""``hico model summary``: parameter counts of a method's model."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico model summary`` to the ``hico`` sub-commands."""
    model = sub.add_parser("model", help="inspect models").add_subparsers(metavar="ACTION")
    summary = model.add_parser("summary", help="parameter counts of a method's model, by part")
    summary.add_argument("--config", default="hico", help="method name or YAML file; 'all' for every named method")
    summary.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    summary.set_defaults(func=cmd_model_summary)


def cmd_model_summary(args: argparse.Namespace) -> int:
    """``hico model summary --config NAME``: parameters per part (built on the meta device: no memory)."""
    from hico.config import load_method, method_names
    from hico.models.summary import count_parameters

    names = method_names() if args.config == "all" else [args.config]
    models = {name: load_method(name, args.overrides).model for name in names}
    rows = [(name, count_parameters(model)) for name, model in models.items()]
    parts = list(rows[0][1])
    width = max(len(n) for n, _ in rows) + 2
    print(f"{'method':<{width}}" + "".join(f"{p:>14}" for p in parts))
    for name, counts in rows:
        print(f"{name:<{width}}" + "".join(f"{counts[p]:>14,}" for p in parts))
    if any(model.num_classes is None for model in models.values()):
        print("classifier: not counted where model.num_classes is auto (its size follows the training data's classes)")
    return 0
