"""Evaluate: linear probe + k-NN (seconds, here) and k-fold fine-tuning (minutes, in its own process) of a run.

Both keep the videos whose labels the run's pretraining used out of their test folds (hico.eval.leakage) and
say how many there were, and how many test videos the pretraining saw without labels.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from hico import runs

from common import check_dataset_path, dataset_path, load_dataset, readable_runs, runs_root


def page() -> None:
    st.header("Evaluate")
    try:
        data = check_dataset_path(str(dataset_path()))
    except ValueError as e:
        st.error(str(e))
        return
    st.caption(f"Evaluation dataset: `{data}` (change it on the Data page)")
    finished = [r for r in readable_runs(runs.list_runs(runs_root())) if "final backbone" in runs.checkpoints(r.path)]
    choices = ["random init"] + [r.name for r in finished]
    backbone = st.selectbox("Backbone", choices, index=1 if finished else 0, help="a finished run's backbone.pt")
    spec = "random" if backbone == "random init" else str(runs_root() / backbone)
    size = st.select_slider("Image size (px)", [32, 64, 96, 112, 128, 224], value=64)
    probe_tab, finetune_tab = st.tabs(["Linear probe and k-NN", "Fine-tuning (k folds)"])
    with probe_tab:
        probe_section(spec, str(data), size)
    with finetune_tab:
        finetune_section(spec, data, size)


PROBE_C = ("1", "auto", "0.01", "0.1", "10")
"""The linear probe's C offered: 1 as in ``hico probe``; auto chooses it per fold inside the training videos."""


def probe_section(spec: str, data: str, size: int) -> None:
    c1, c2 = st.columns(2)
    folds = c1.number_input("Folds (grouped by patient)", 2, 10, 3)
    C = c2.selectbox("Linear probe's C (inverse L2 strength)", PROBE_C,
                     help="auto: chosen per fold from 0.001-10 by a grouped cross-validation inside that fold's "
                     "training videos; pretrained features often need a smaller C than 1")  # fmt: skip
    if not st.button("Run the probe", type="primary"):
        return
    with st.spinner("Extracting features and fitting a logistic regression and k-NN per level..."):
        try:
            result = run_probe(spec, _mtime(spec), data, size, int(folds), None if C == "auto" else float(C))
        except ValueError as e:
            st.error(str(e))
            return
    st.markdown(f"**{_backbone_name(spec)}** on `{data}`: {result['n_videos']} videos, {result['n_frames']} frames")
    rows = [
        {"level": name, "linear %": round(100 * r["linear_mean"], 1), "± (folds)": round(100 * r["linear_std"], 1),
         "k-NN %": round(100 * r["knn_mean"], 1), "linear, video vote %": round(100 * r["linear_video_acc"], 1)}
        for name, r in result["levels"].items()
    ]  # fmt: skip
    if C == "auto":
        for row, r in zip(rows, result["levels"].values(), strict=True):
            row["C per fold"] = ", ".join(f"{c:g}" for c in r["linear_C"])
    chance = majority_share(result)
    rows.append({"level": "chance (always the most frequent class)", "linear %": round(100 * chance, 1),
                 "± (folds)": None, "k-NN %": round(100 * chance, 1), "linear, video vote %": None})  # fmt: skip
    table(rows, "probe.csv")
    overlap_note(result)
    st.plotly_chart(
        confusion_figure(result["levels"]["global"]["linear_confusion"], result["classes"], "global, linear")
    )


@st.cache_data(max_entries=16, show_spinner=False)
def run_probe(spec: str, mtime: float, data: str, size: int, folds: int, C: float | None = 1.0) -> dict:
    from hico.eval.features import extract_features
    from hico.eval.probe import probe
    from hico.models import resolve_backbone

    feats = extract_features(resolve_backbone(spec, seed=0), load_dataset(data), size=size, per_video=8)
    return probe(feats, folds=folds, C=C, backbone=spec, data=data)


def finetune_section(spec: str, data: Path, size: int) -> None:
    folder = runs.finetune_folder(spec, runs_root())
    c1, c2 = st.columns(2)
    folds = c1.number_input("Folds", 2, 10, 3, key="ft-folds")
    epochs = c2.number_input("Epochs per fold", 1, 100, 3)
    if st.button("Launch fine-tuning", type="primary"):
        out, _ = runs.launch_finetune(spec, data, int(folds), int(epochs), size, root=runs_root())
        st.success(f"Fine-tuning in its own process; results will appear below ({out.name}).")
    jobs = runs.finetune_jobs(folder)
    running = [job for job in jobs if job.state == "running"]
    for job in jobs:
        if job.state in ("failed", "dead"):
            st.error(f"{job.name}: {job.error}")
    if running:
        live_progress([job.path for job in running])
    mine = [r for r in _results(jobs) if _same_folder(r[1].get("data"), data)]
    if not mine:
        st.caption(f"No fine-tuning results of this backbone on `{data}` yet.")
    else:
        path, results = mine[-1]
        show_results(results, path.parent.name, spec)
    side_by_side(data)


@st.fragment(run_every=2.0)
def live_progress(outs: list[Path]) -> None:
    """A progress bar per running fine-tuning: fold and epoch from its progress.json, redrawn every 2 s."""
    for out in outs:
        p = runs.finetune_progress(out)
        if p is None:
            st.progress(0.0, text=f"{out.name}: loading the videos and the backbone...")
            continue
        done = (p["fold"] - 1) * p["epochs"] + p["epoch"]
        total = p["folds"] * p["epochs"]
        left = p["seconds"] / done * (total - done)
        st.progress(done / total, text=f"{out.name}: fold {p['fold']}/{p['folds']}, epoch {p['epoch']}/{p['epochs']}, "
                    f"test accuracy {100 * p['test_accuracy']:.0f} %, about {left:.0f} s left")  # fmt: skip
    if all(runs.job_status(out) is None or runs.job_status(out).state != "running" for out in outs):
        st.rerun()  # finished: show its results


def _results(jobs) -> list[tuple[Path, dict]]:
    found = []
    for job in jobs:
        path = job.path / "results.json"
        if path.is_file():
            try:
                found.append((path, json.loads(path.read_text())))
            except ValueError:
                continue
    return found


def _same_folder(a, b) -> bool:
    return a is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _backbone_name(spec: str) -> str:
    return "random init" if spec == "random" else Path(spec).name


def majority_share(result: dict) -> float:
    """The accuracy of always answering the most frequent class, over the frames a probe scored."""
    counts = np.asarray(result["levels"]["global"]["linear_confusion"]).sum(axis=1)
    return float(counts.max() / counts.sum()) if counts.sum() else 0.0


def table(rows: list[dict], filename: str) -> None:
    """A table and its CSV download."""
    st.dataframe(rows, hide_index=True)
    if rows:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        st.download_button(f"Download {filename}", buf.getvalue(), filename, "text/csv", key=f"csv-{filename}")


def side_by_side(data: Path) -> None:
    """The honest fine-tuning accuracies of every backbone fine-tuned on this dataset, one row each."""
    from hico.eval.finetune import PROTOCOL_LABELS

    folders = [runs.finetune_folder("random", runs_root())]
    folders += [runs.finetune_folder(str(r.path)) for r in readable_runs(runs.list_runs(runs_root()))]
    rows = []
    for folder in folders:
        found = [r for r in _results(runs.finetune_jobs(folder)) if _same_folder(r[1].get("data"), data)]
        if not found:
            continue
        path, results = found[-1]
        row = {"backbone": _backbone_name(results["backbone"]), "result": path.parent.name}
        for p in ("honest_final", "honest_val"):
            s = results["summary"][p]
            row[f"{PROTOCOL_LABELS[p]} %"] = round(100 * s["accuracy"], 1)
            row[f"{PROTOCOL_LABELS[p]} 95% CI"] = f"{100 * s['accuracy_ci'][0]:.1f}–{100 * s['accuracy_ci'][1]:.1f}"
        rows.append(row)
    if len(rows) > 1:
        st.subheader("Backbones side by side")
        st.caption(f"The latest fine-tuning of each backbone on `{data}` (their folds may differ: compare intervals).")
        table(rows, "backbones.csv")


def show_results(results: dict, name: str, spec: str) -> None:
    from hico.eval.finetune import PROTOCOL_LABELS, PROTOCOLS, ci_unit

    st.markdown(
        f"**{_backbone_name(spec)}** on `{results['data']}` ({name}): {results['config']['folds']} folds × "
        f"{results['config']['epochs']} epochs, {results['n_videos']} videos"
    )
    rows = []
    for p in PROTOCOLS:
        s = results["summary"][p]
        rows.append({
            "protocol": PROTOCOL_LABELS[p], "accuracy %": round(100 * s["accuracy"], 1),
            "95% CI": f"{100 * s['accuracy_ci'][0]:.1f}–{100 * s['accuracy_ci'][1]:.1f}",
            "macro F1 %": round(100 * s["macro_f1"], 1), "video accuracy %": round(100 * s["video_accuracy"], 1),
        })  # fmt: skip
    table(rows, "finetune.csv")
    final = results["summary"]["honest_final"]
    st.caption("Per class, final epoch (honest)")
    table([{"class": c, "precision %": round(100 * v["precision"], 1), "recall %": round(100 * v["recall"], 1),
            "F1 %": round(100 * v["f1"], 1), "support (frames)": v["support"]}
           for c, v in final["per_class"].items()], "per_class.csv")  # fmt: skip
    st.caption("Per fold")
    table([{"fold": f["fold"], "test videos": len(f["test_videos"]), "test frames": f["n_test_frames"],
            **{f"{PROTOCOL_LABELS[p]} %": round(100 * f["protocols"][p]["accuracy"], 1) for p in PROTOCOLS}}
           for f in results["folds"]], "per_fold.csv")  # fmt: skip
    overlap_note(results)
    st.caption(
        f"95% CI: bootstrap over test {ci_unit(results)}s. "
        "The best-TEST-epoch row is the authors' protocol: it picks the epoch on the test set and is biased upwards."
    )
    st.plotly_chart(
        confusion_figure(results["summary"]["honest_final"]["confusion"], results["classes"], "final epoch")
    )


def overlap_note(result: dict) -> None:
    """Say what the pretraining saw of the evaluated videos: the labelled ones are kept out of the test folds."""
    from hico.eval.leakage import overlap_line

    if "label_overlap" not in result:
        st.warning(
            "This result predates the check for label leakage: its test folds may hold videos whose labels the "
            "pretraining used. Run it again."
        )
    elif result["label_overlap"] is None:
        st.warning(overlap_line(result))
    else:
        st.caption(
            overlap_line(result) + ". Videos whose labels the pretraining used are never tested, so the "
            "accuracies are not inflated by them; videos it saw without labels are allowed (self-supervision)."
        )


def confusion_figure(cm: list[list[int]], classes: list[str], title: str) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(z=cm, x=classes, y=classes, text=cm, texttemplate="%{text}", colorscale="Blues", showscale=False)
    )
    fig.update_layout(title=f"Confusion matrix ({title}), frames", xaxis_title="predicted", yaxis_title="true",
                      yaxis_autorange="reversed", height=360, width=420)  # fmt: skip
    return fig


def _mtime(spec: str) -> float:
    path = runs.checkpoints(spec).get("final backbone") if Path(spec).is_dir() else Path(spec)
    return path.stat().st_mtime if path is not None and path.exists() else 0.0
