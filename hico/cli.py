"""The ``hico`` command line.

    hico data scan PATH [--json]        what a dataset holds (videos, frames, classes, groups, unreadable files,
                                        index rows refused because they point outside the dataset folder)
    hico data synth --out DIR           make the synthetic lung-ultrasound sample set
    hico model summary --config NAME    parameter counts of a method's model ('all': every named method)
    hico demo                           the end-to-end demo on data_samples/ (pairs and augmentations)

Errors in what the user gave (a missing folder, an empty dataset, a bad value), an unreadable run file and a full
disk print one line and exit 2; set HICO_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hico import __version__
from hico.io import DiskFullError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES = PROJECT_ROOT / "data_samples"


class UserError(Exception):
    """An error in the user's input: reported as one line, without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hico`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from hico.runs import record_exit  # a process hico.runs launched records how it ended, for its launcher

    try:
        return record_exit(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hico: interrupted", file=sys.stderr)
        return record_exit(130, "hico: interrupted")
    except (UserError, ValueError, FileNotFoundError, FileExistsError, DiskFullError) as e:
        if os.environ.get("HICO_DEBUG"):
            raise
        print(f"hico: error: {e}", file=sys.stderr)
        return record_exit(2, f"hico: error: {e}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``hico`` sub-command."""
    p = argparse.ArgumentParser(prog="hico", description="HiCo workbench: contrastive pretraining on ultrasound video")
    p.add_argument("--version", action="version", version=f"hico {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")

    data = sub.add_parser("data", help="inspect or make datasets").add_subparsers(metavar="ACTION")
    scan = data.add_parser("scan", help="count a dataset's videos, frames, classes, groups and unreadable files")
    scan.add_argument("path", type=Path, help="dataset root folder")
    scan.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    scan.add_argument("--size", type=int, default=256, help="working size of the cached frames (default 256)")
    scan.add_argument("--cache-dir", type=Path, default=None, help="frame cache folder (default: ~/.cache/hico)")
    scan.add_argument("--no-cache", action="store_true", help="decode in memory only, write no cache")
    scan.set_defaults(func=cmd_data_scan)

    synth = data.add_parser("synth", help="make a synthetic lung-ultrasound video set")
    synth.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    synth.add_argument("--videos-per-class", type=int, default=12)
    synth.add_argument("--frames", type=int, default=16, help="frames per video")
    synth.add_argument("--size", type=int, default=128, help="frame size in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    synth.set_defaults(func=cmd_data_synth)

    model = sub.add_parser("model", help="inspect models").add_subparsers(metavar="ACTION")
    summary = model.add_parser("summary", help="parameter counts of a method's model, by part")
    summary.add_argument("--config", default="hico", help="method name or YAML file; 'all' for every named method")
    summary.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    summary.set_defaults(func=cmd_model_summary)

    from hico.train.cli import register as register_pretrain

    register_pretrain(sub)

    demo = sub.add_parser("demo", help="end-to-end demo on data_samples/: scan, pairs, augmentations")
    demo.add_argument("--data", type=Path, default=SAMPLES)
    demo.add_argument("--out", type=Path, default=PROJECT_ROOT / "runs" / "demo")
    demo.set_defaults(func=cmd_demo)
    from hico.eval.finetune import register as register_finetune

    register_finetune(sub)
    from hico.eval.embed import register as register_embed
    from hico.eval.probe import register as register_probe

    register_probe(sub)
    register_embed(sub)
    return p


def _load_dataset(path: Path, size: int, cache_dir: Path | None, no_cache: bool, progress: bool):
    from hico.data import scan
    from hico.data.cache import default_cache_dir

    ds = scan(path, size=size, cache_dir=None if no_cache else (cache_dir or default_cache_dir()))
    ds.load_all(progress=progress)
    if not ds.videos:
        first = ds.unreadable[0][1] if ds.unreadable else ""
        raise UserError(f"no readable video in {path} ({len(ds.unreadable)} unreadable; first: {first})")
    return ds


def cmd_data_scan(args: argparse.Namespace) -> int:
    """``hico data scan PATH``: print what a dataset holds; exit 2 when it is empty or unreadable."""
    ds = _load_dataset(args.path, args.size, args.cache_dir, args.no_cache, progress=not args.json)
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    print(format_scan_table(ds))
    return 0


def format_scan_table(ds) -> str:
    """A plain-text table of a loaded dataset: per class videos, frames and groups, then totals."""
    from collections import defaultdict

    per: dict[str, list] = defaultdict(lambda: [0, 0, set()])
    kinds: dict[str, int] = defaultdict(int)
    for i, v in enumerate(ds.videos):
        row = per[v.label]
        row[0] += 1
        row[1] += ds.n_frames(i)
        row[2].add(v.group)
        kinds[v.kind] += 1
    lines = [f"dataset {ds.root}", f"{'class':<16}{'videos':>8}{'frames':>10}{'groups':>8}"]
    for label in sorted(per):
        n_videos, n_frames, groups = per[label]
        lines.append(f"{label:<16}{n_videos:>8}{n_frames:>10,}{len(groups):>8}")
    s = ds.summary()
    lines.append(f"{'total':<16}{s['videos']:>8}{s['frames']:>10,}{s['groups']:>8}")
    lines.append("kinds: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    lines.append(f"unreadable: {len(ds.unreadable)}")
    lines += [f"  {reason}" for _, reason in ds.unreadable]
    if ds.refused:
        lines.append(f"refused (outside the dataset folder, not read): {len(ds.refused)}")
        lines += [f"  {reason}" for _, reason in ds.refused]
    return "\n".join(lines)


def cmd_data_synth(args: argparse.Namespace) -> int:
    """``hico data synth --out DIR``: write the synthetic sample set."""
    from hico.data.synth import write_dataset

    out = write_dataset(
        args.out, args.videos_per_class, args.frames, args.size, seed=args.seed, overwrite=args.overwrite
    )
    print(f"wrote {out}")
    return 0


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


def cmd_demo(args: argparse.Namespace) -> int:
    """``hico demo``: scan the sample data, draw HiCo and USCL pairs, augment them, save a picture."""
    from hico.demo import run_demo

    ds = _load_dataset(args.data, 128, None, no_cache=True, progress=True)
    print(format_scan_table(ds))
    png = run_demo(ds, args.out)
    print(f"pairs and their augmentations: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
