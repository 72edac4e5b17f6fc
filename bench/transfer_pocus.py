"""Transfer to POCUS: pretrain on COVID-BLUES with HiCo and with SimCLR, fine-tune on POCUS, beside random init.

    python bench/transfer_pocus.py                       # the defaults: about 40 minutes on a 2-core CPU
    python bench/transfer_pocus.py --epochs 2 --ft-epochs 1 --folds 2 --out runs/transfer-smoke   # a smoke run
    python bench/transfer_pocus.py --methods hico simclr uscl ivpp mocov2 ucl   # every method (hours on a CPU)

The same budget for both pretrained methods: the same data (COVID-BLUES, every video but a 20 % patient-grouped
holdout), the same number of optimizer steps of the same batch at the same image size, from the same random
initialisation (ImageNet weights cannot be downloaded here). The wall-clock seconds each took are printed too.
Then every backbone, and a random one, is fine-tuned on POCUS (covid / pneumonia / regular) by ``hico finetune``'s
protocol: 5 folds grouped by patient, the last residual block + a new head, and the three ways to pick an epoch
(final epoch and inner-validation epoch: honest; best test epoch: the authors', optimistic). A video whose
label a pretraining used is never a test video when the fine-tuning data is the pretraining data (``--finetune-data``
= ``--pretrain-data``): ``finetune`` keeps it in training, and the table says how many there were per backbone
(``label_overlap``) and how many test videos the pretraining saw without labels (``pretrained_on_test_videos``).

Results go to ``--out`` (pretraining run directories, one ``finetune-<method>.json`` each, ``table.txt``). Run it
again with the same ``--out`` and finished parts are reused: an interrupted pretraining resumes from its
``last.pt``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hico.config import load_method
from hico.data import scan
from hico.data.cache import default_cache_dir
from hico.eval.finetune import PROTOCOL_LABELS, PROTOCOLS, FinetuneConfig, finetune
from hico.eval.leakage import overlap_line
from hico.io import write_json
from hico.train.rundir import read_status
from hico.train.trainer import pretrain

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def pretrain_method(method: str, args: argparse.Namespace) -> dict:
    """Pretrain ``method`` into ``out/<method>`` (reusing a finished run, resuming a stopped one).

    Returns ``{"run": path, "seconds": wall-clock seconds of pretraining, "steps": optimizer steps}``, also kept in
    ``out/pretrain-<method>.json``.
    """
    run_dir, record = args.out / method, args.out / f"pretrain-{method}.json"
    status = read_status(run_dir) if run_dir.exists() else None
    if status is not None and status.get("state") == "finished" and record.exists():
        print(f"{method}: reusing the finished run {run_dir}")
        return json.loads(record.read_text())
    t0 = time.perf_counter()
    if status is not None:
        print(f"{method}: resuming {run_dir} ({status.get('state')}; the time before the stop is not counted)")
        pretrain(resume=run_dir)
    else:
        overrides = [
            f"data.path={args.pretrain_data}",
            "model.init=random",
            f"model.num_classes={len(scan(args.pretrain_data).classes)}",  # soft CE on COVID-BLUES' labels
            f"augment.size={args.size}",
            f"data.working_size={args.working_size}",
            f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.pairs_per_video={args.pairs_per_video}",
            f"train.lr={args.lr}",
            f"train.constant_epochs={max(1, args.epochs // 10)}",
            f"train.knn_every={args.knn_every}",
            "train.log_every=5",
            f"train.seed={args.seed}",
        ]
        pretrain(load_method(method, overrides), out=run_dir)
    result = {"run": str(run_dir), "seconds": time.perf_counter() - t0, "steps": read_status(run_dir)["step"]}
    write_json(record, result)
    return result


def finetune_backbone(name: str, backbone: str, videos, args: argparse.Namespace) -> dict:
    """Fine-tune ``backbone`` on the POCUS videos (reusing ``finetune-<name>.json`` when it exists)."""
    path = args.out / f"finetune-{name}.json"
    if path.exists():
        print(f"{name}: reusing {path}")
        return json.loads(path.read_text())
    cfg = FinetuneConfig(
        folds=args.folds,
        epochs=args.ft_epochs,
        size=args.size,
        frames_per_video=args.frames_per_video,
        test_frames_per_video=args.frames_per_video,
        classes=args.classes,
        seed=args.seed,
        device="cpu",
    )
    results = finetune(backbone, videos, cfg)
    write_json(path, results)
    return results


def format_table(rows: list[dict], folds: int) -> str:
    """One line per backbone: pretraining cost, then accuracy [95 % CI] of each protocol, macro F1, video acc."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    head = f"{'backbone':<10}{'pretrain':>12}"
    head += "".join(f"  {PROTOCOL_LABELS[p]:<31}" for p in PROTOCOLS) + f"{'macro F1':>10}{'video acc':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cost = "-" if r["pretrain_s"] is None else f"{r['steps']} st {r['pretrain_s'] / 60:.0f} min"
        cells = ""
        for p in PROTOCOLS:
            s = r["summary"][p]
            acc = f"{pct(s['accuracy'])} [{pct(s['accuracy_ci'][0])}, {pct(s['accuracy_ci'][1])}]"
            cells += f"  {acc:<31}"
        final = r["summary"]["honest_final"]
        lines.append(f"{r['name']:<10}{cost:>12}{cells}{pct(final['macro_f1']):>10}{pct(final['video_accuracy']):>11}")
    lines.append(
        f"accuracy: frames, {folds} folds grouped by patient, confusion matrices summed; [95% CI]: bootstrap over"
    )
    lines.append("patient groups; macro F1 and video accuracy (majority vote): final epoch. The 'best TEST epoch'")
    lines.append("column is the authors' protocol and is biased upwards: quote the honest ones.")
    lines += [f"{r['name']}: {r['overlap']}" for r in rows if "overlap" in r]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain-data", type=Path, default=SHARED / "covid_blues")
    p.add_argument("--finetune-data", type=Path, default=SHARED / "pocus")
    p.add_argument("--classes", nargs="+", default=["covid", "pneumonia", "regular"])
    p.add_argument(
        "--methods",
        nargs="+",
        default=["hico", "simclr"],
        help="pretraining methods (+ random init): any configuration, e.g. hico simclr uscl ivpp mocov2 ucl",
    )
    p.add_argument("--size", type=int, default=96, help="image size of pretraining and fine-tuning (default 96)")
    p.add_argument("--working-size", type=int, default=128, help="cached frame size (default 128)")
    p.add_argument("--epochs", type=int, default=20, help="pretraining epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pairs-per-video", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--knn-every", type=int, default=10)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--ft-epochs", type=int, default=6, help="fine-tuning epochs per fold (default 6)")
    p.add_argument("--frames-per-video", type=int, default=16, help="frames per video, train and test (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "transfer_pocus")
    args = p.parse_args()
    for path in (args.pretrain_data, args.finetune_data):
        if not path.is_dir():
            raise SystemExit(f"transfer_pocus: {path} does not exist (pass --pretrain-data / --finetune-data)")
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    backbones: list[tuple[str, str, float | None, int | None]] = [("random", "random", None, None)]
    for method in args.methods:
        done = pretrain_method(method, args)
        backbones.append((method, done["run"], done["seconds"], done["steps"]))

    videos = scan(args.finetune_data, size=args.working_size, cache_dir=default_cache_dir())
    videos.load_all(progress=True)
    for name, spec, seconds, steps in backbones:
        results = finetune_backbone(name, spec, videos, args)
        overlap = overlap_line(results) if "label_overlap" in results else "not checked (an older result: delete it)"
        rows.append(
            {"name": name, "pretrain_s": seconds, "steps": steps, "summary": results["summary"], "overlap": overlap}
        )

    budget = (
        f"budget: pretraining on {args.pretrain_data.name}, {args.epochs} epochs x batch {args.batch_size} pairs at "
        f"{args.size} px, random init, lr {args.lr}; fine-tuning on {args.finetune_data.name} "
        f"({', '.join(args.classes)}): {args.folds} folds x {args.ft_epochs} epochs, last block + head, "
        f"{args.frames_per_video} frames per video, {args.size} px; CPU"
    )
    table = budget + "\n" + format_table(rows, args.folds)
    (args.out / "table.txt").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
