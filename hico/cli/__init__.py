"""The ``hico`` command line: one module per command group, over the library (which never imports it).

    hico data scan PATH [--json]        what a dataset holds (videos, frames, classes, groups, unreadable files,
                                        index rows refused because they point outside the dataset folder)
    hico data synth --out DIR           make the synthetic lung-ultrasound sample set
    hico model summary --config NAME    parameter counts of a method's model ('all': every named method)
    hico pretrain ...                   pretrain a method (:mod:`hico.cli.pretrain`)
    hico demo                           the end-to-end demo on data_samples/ (pairs and augmentations)
    hico finetune / probe / embed ...   evaluate a backbone (:mod:`hico.cli.finetune`, :mod:`hico.cli.probe`,
                                        :mod:`hico.cli.embed`)
    hico study ...                      the label-efficiency study: methods x label fractions x protocols

Building the parser imports no torch: ``hico --help`` and ``hico data scan`` start in a fraction of a second;
each command imports the modules it runs inside its function.

Errors in what the user gave (a missing folder, an empty dataset, a bad value: :class:`UserError`, ValueError,
FileNotFoundError, FileExistsError), an unreadable run file and a full disk print one line and exit 2; set
HICO_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hico import __version__
from hico.errors import UserError
from hico.io import DiskFullError
from hico.paths import PROJECT_ROOT, SAMPLES

__all__ = ["PROJECT_ROOT", "SAMPLES", "UserError", "build_parser", "main"]


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
    """The argument parser of every ``hico`` sub-command (imports no torch)."""
    from hico.cli import data, demo, embed, finetune, model, pretrain, probe, study

    p = argparse.ArgumentParser(prog="hico", description="HiCo workbench: contrastive pretraining on ultrasound video")
    p.add_argument("--version", action="version", version=f"hico {__version__}")
    sub = p.add_subparsers(metavar="COMMAND")
    for group in (data, model, pretrain, demo, finetune, probe, embed, study):
        group.register(sub)
    return p


if __name__ == "__main__":
    sys.exit(main())
