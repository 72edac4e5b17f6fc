"""Compare: what pretraining buys when labels are scarce, from a ``hico study`` folder.

A study pretrains every method with the same budget, then evaluates each (and a random initialisation) on the same
patient-grouped folds at several label fractions (hico.study). This page draws the label-efficiency curves
(accuracy against the fraction of labelled training videos, one line per method, its 95 % interval as a band),
the table, the per-class F1 and a CSV download, and starts a new study in its own process.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import plotly.colors
import plotly.graph_objects as go
import streamlit as st

from hico import runs

from common import check_dataset_path, dataset_path, runs_root

COLOURS = plotly.colors.qualitative.Plotly
PROTOCOL_NAMES = {"knn": "k-NN on frozen features", "probe": "linear probe on frozen features",
                  "finetune": "fine-tuning (honest: inner-validation epoch)"}  # fmt: skip


def page() -> None:
    st.header("Compare")
    st.caption(
        "What pretraining buys when labels are scarce: every method pretrained with the same budget, evaluated on "
        "the same patient-grouped folds with a fraction of the training videos labelled."
    )
    studies = runs.list_studies(runs_root())
    with st.expander("Start a study", expanded=not studies):
        start_form()
    if not studies:
        st.info("No study yet: start one above, or run `hico study ... --out runs/studies/NAME` in a terminal.")
        return
    names = [s.name for s in studies]
    chosen = st.selectbox("Study", names, format_func=lambda n: _label(studies[names.index(n)]))
    info = studies[names.index(chosen)]
    show_progress(info)
    show_study(info.path)


def _label(info: runs.StudyInfo) -> str:
    return f"{info.name} ({info.state}, {info.done}/{info.total} results)"


def show_progress(info: runs.StudyInfo) -> None:
    if info.state == "running":
        st.progress(info.done / info.total if info.total else 0.0, text=f"{info.done} of {info.total} results")
        if st.button("Refresh"):
            st.rerun()
    elif info.state in ("failed", "dead"):
        st.error(f"The study {info.state}: {info.error}")
    log = runs.log_path(info.path)
    if log.is_file():
        with st.expander("Log"):
            st.code("\n".join(log.read_text(errors="replace").splitlines()[-40:]) or "(empty)")


def read_rows(folder: Path) -> list[dict]:
    """study.csv as dicts with numbers (empty cells: None)."""
    path = folder / "study.csv"
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: _number(v) if k not in ("method", "protocol") else v for k, v in r.items()})
    return rows


def _number(text: str):
    if text in ("", None):
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def show_study(folder: Path) -> None:
    rows = read_rows(folder)
    if not rows:
        st.info("No result yet: the study is pretraining (see its log).")
        return
    study = json.loads((folder / "study.json").read_text())
    cfg = study["config"]
    st.caption(
        f"Pretrained on `{cfg.get('pretrain_data')}`, {cfg['epochs']} epochs x {cfg['pairs_per_video']} pairs per "
        f"video, batch {cfg['batch_size']}, {cfg['size']} px; evaluated on `{cfg['eval_data']}` "
        f"({', '.join(study.get('classes', []))}), {cfg['folds']} folds, level {cfg['level']}."
    )
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    tabs = st.tabs([PROTOCOL_NAMES.get(p, p) for p in protocols])
    for tab, protocol in zip(tabs, protocols, strict=True):
        with tab:
            mine = [r for r in rows if r["protocol"] == protocol]
            st.plotly_chart(curves_figure(mine, protocol), width="stretch")
            paired_table(study, protocol)
            per_class_table(study, protocol)
    st.subheader("Every result")
    st.dataframe(rows, hide_index=True)
    st.download_button("Download study.csv", (folder / "study.csv").read_bytes(), "study.csv", "text/csv")
    failed = [c for c in study["cells"].values() if c.get("error")]
    for c in failed:
        st.warning(f"{c['method']}, {c['protocol']} at {c['label_fraction']:g}: {c['error']}")


def curves_figure(rows: list[dict], protocol: str) -> go.Figure:
    """Accuracy against label fraction, one line per method with its interval as a band (log x axis)."""
    fig = go.Figure()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, method in enumerate(methods):
        pts = sorted(
            (r for r in rows if r["method"] == method and _ok(r["accuracy"])), key=lambda r: r["label_fraction"]
        )
        if not pts:
            continue
        colour = COLOURS[i % len(COLOURS)]
        x = [r["label_fraction"] for r in pts]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=[100 * r["ci_high"] for r in pts] + [100 * r["ci_low"] for r in pts][::-1],
                                 fill="toself", fillcolor=_transparent(colour), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False, legendgroup=method))  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[100 * r["accuracy"] for r in pts],
                mode="lines+markers",
                name=method,
                line={"color": colour, "dash": "dot" if method in ("random", "imagenet") else "solid"},
                legendgroup=method,
            )  # fmt: skip
        )
    fig.update_layout(
        title="Accuracy of test frames against the labelled fraction",
        xaxis={"title": "fraction of training videos with labels", "type": "log"},
        yaxis={"title": "accuracy (%)"},
        height=420,
        margin={"t": 50, "b": 40},
    )
    return fig


def _ok(x) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def _transparent(colour: str) -> str:
    r, g, b = plotly.colors.hex_to_rgb(colour)
    return f"rgba({r}, {g}, {b}, 0.15)"


def paired_table(study: dict, protocol: str) -> None:
    """Each method's gap to random init on the same test videos, with its paired interval (``study.json``'s
    ``paired``: both backbones scored on the same bootstrap draws of patients, so what they share cancels)."""
    rows = [
        {"method": r["method"], "label fraction": r["label_fraction"],
         "difference (points)": round(100 * r["difference"], 1),
         "95% paired CI": f"{100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f}",
         "clear gain": "yes" if r["ci_low"] > 0 else ("clear loss" if r["ci_high"] < 0 else "no")}
        for r in study.get("paired", []) if r["protocol"] == protocol
    ]  # fmt: skip
    if rows:
        st.caption(
            f"Against {study['paired'][0]['baseline']} on the same test videos: the difference of the accuracies "
            "and its paired 95 % interval (an interval above 0 is a gain that patient sampling does not explain)"
        )
        st.dataframe(rows, hide_index=True)


def per_class_table(study: dict, protocol: str) -> None:
    """F1 per class of every method at each label fraction of ``protocol``."""
    rows = []
    for cell in study["cells"].values():
        if cell.get("protocol") != protocol or not cell.get("per_class"):
            continue
        row = {"method": cell["method"], "label fraction": cell["label_fraction"]}
        row.update({f"F1 {name}": round(v["f1"], 3) for name, v in cell["per_class"].items()})
        rows.append(row)
    if rows:
        st.caption("F1 per class")
        st.dataframe(sorted(rows, key=lambda r: (r["method"], r["label fraction"])), hide_index=True)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        st.download_button("Download F1 per class (CSV)", buf.getvalue(), f"f1-{protocol}.csv", "text/csv",
                           key=f"f1-{protocol}")  # fmt: skip


def start_form() -> None:
    """Start ``hico study`` in its own process (hico.runs.launch_study)."""
    try:
        data = check_dataset_path(str(dataset_path()))
    except ValueError as e:
        st.error(str(e))
        return
    st.caption(f"Pretraining and evaluation data: `{data}` (change it on the Data page).")
    from hico.config import method_names

    with st.form("study"):
        methods = st.multiselect(
            "Methods", [*method_names(ablation=False), "random"], default=["hico", "simclr", "random"]
        )
        fractions = st.multiselect("Label fractions", [0.05, 0.1, 0.25, 0.5, 1.0], default=[0.25, 1.0])
        protocols = st.multiselect("Protocols", list(PROTOCOL_NAMES), default=["knn", "probe"],
                                   format_func=PROTOCOL_NAMES.get)  # fmt: skip
        left, mid, right = st.columns(3)
        size = left.select_slider("Image size (px)", [32, 48, 64, 96, 128], value=32)
        epochs = mid.number_input("Pretraining epochs", 1, 1000, 2)
        folds = right.number_input("Folds", 2, 10, 3)
        submitted = st.form_submit_button("Start the study", type="primary")
    if not submitted:
        return
    if not methods or not fractions or not protocols:
        st.error("Choose at least one method, one label fraction and one protocol.")
        return
    options = ["--methods", *methods, "--pretrain-data", str(data), "--eval-data", str(data),
               "--label-fractions", *map(str, sorted(fractions)), "--protocols", *protocols,
               "--folds", str(folds), "--size", str(size), "--epochs", str(epochs), "--batch-size", "16"]  # fmt: skip
    out, _ = runs.launch_study("study", options, runs_root())
    st.success(f"Started: {out.name}")
