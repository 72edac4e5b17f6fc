"""Evaluate: linear probe + k-NN (seconds, here) and k-fold fine-tuning (minutes, in its own process) of a run.

Both keep the videos whose labels the run's pretraining used out of their test folds (hico.eval.leakage) and
say how many there were, and how many test videos the pretraining saw without labels.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def probe_section(spec: str, data: str, size: int) -> None:
    folds = st.number_input("Folds (grouped by patient)", 2, 10, 3)
    if not st.button("Run the probe", type="primary"):
        return
    with st.spinner("Extracting features and fitting a logistic regression and k-NN per level..."):
        try:
            result = run_probe(spec, _mtime(spec), data, size, int(folds))
        except ValueError as e:
            st.error(str(e))
            return
    rows = [
        {"level": name, "linear %": round(100 * r["linear_mean"], 1), "± (folds)": round(100 * r["linear_std"], 1),
         "k-NN %": round(100 * r["knn_mean"], 1), "linear, video vote %": round(100 * r["linear_video_acc"], 1)}
        for name, r in result["levels"].items()
    ]  # fmt: skip
    st.dataframe(rows, hide_index=True)
    overlap_note(result)
    st.plotly_chart(
        confusion_figure(result["levels"]["global"]["linear_confusion"], result["classes"], "global, linear")
    )


@st.cache_data(max_entries=16, show_spinner=False)
def run_probe(spec: str, mtime: float, data: str, size: int, folds: int) -> dict:
    from hico.eval.features import extract_features
    from hico.eval.probe import probe
    from hico.models import resolve_backbone

    feats = extract_features(resolve_backbone(spec, seed=0), load_dataset(data), size=size, per_video=8)
    return probe(feats, folds=folds, backbone=spec, data=data)


def finetune_section(spec: str, data: Path, size: int) -> None:
    folder = runs.finetune_folder(spec, runs_root())
    c1, c2 = st.columns(2)
    folds = c1.number_input("Folds", 2, 10, 3, key="ft-folds")
    epochs = c2.number_input("Epochs per fold", 1, 100, 3)
    if st.button("Launch fine-tuning", type="primary"):
        out, _ = runs.launch_finetune(spec, data, int(folds), int(epochs), size, root=runs_root())
        st.success(f"Fine-tuning in its own process; results will appear below ({out.name}).")
    jobs = runs.finetune_jobs(folder)
    for job in jobs:
        if job.state in ("failed", "dead"):
            st.error(f"{job.name}: {job.error}")
        elif job.state == "running":
            st.info(f"{job.name}: fine-tuning is going on; reload the page to see its results.")
    results = [job.path / "results.json" for job in jobs if (job.path / "results.json").is_file()]
    if not results:
        st.caption("No fine-tuning results for this backbone yet.")
        return
    show_results(json.loads(results[-1].read_text()), results[-1].parent.name)


def show_results(results: dict, name: str) -> None:
    from hico.eval.finetune import PROTOCOL_LABELS, PROTOCOLS, ci_unit

    st.markdown(
        f"**{name}**: {results['config']['folds']} folds × {results['config']['epochs']} epochs, {results['n_videos']} videos"
    )
    rows = []
    for p in PROTOCOLS:
        s = results["summary"][p]
        rows.append({
            "protocol": PROTOCOL_LABELS[p], "accuracy %": round(100 * s["accuracy"], 1),
            "95% CI": f"{100 * s['accuracy_ci'][0]:.1f}–{100 * s['accuracy_ci'][1]:.1f}",
            "macro F1 %": round(100 * s["macro_f1"], 1), "video accuracy %": round(100 * s["video_accuracy"], 1),
        })  # fmt: skip
    st.dataframe(rows, hide_index=True)
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
