"""Curves: loss terms, learning rate, k-NN accuracy per level and throughput of one or several runs, live."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
import yaml

from hico import runs
from hico.names import term_names

from common import readable_runs, runs_root

LEVELS = ("local", "medium", "global")


def page() -> None:
    st.header("Curves")
    all_runs = readable_runs(runs.list_runs(runs_root()))
    if not all_runs:
        st.info("No runs yet: launch one on the Train page (the demo preset takes about two minutes).")
        return
    names = [r.name for r in all_runs]
    chosen = st.multiselect("Runs", names, default=names[:1], help="overlay runs to compare methods")
    live = any(r.state in ("running", "starting") for r in all_runs if r.name in chosen)
    charts([r for r in all_runs if r.name in chosen], live)


def _figure(title: str, x: str, y: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=320, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def charts(chosen: list, live: bool) -> None:
    @st.fragment(run_every=2.0 if live else None)
    def draw() -> None:
        loss = _figure("Training loss (every logged step)", "step", "loss")
        terms = _figure("Loss terms (epoch means)", "epoch", "loss")
        knn = _figure("k-NN accuracy of held-out videos, per level (epoch 0: before training)", "epoch", "accuracy")
        lr = _figure("Learning rate", "step", "lr")
        speed = _figure("Throughput", "epoch", "pairs/s")
        for info in chosen:
            name = info.name
            try:
                c = runs.curves(info.path)
            except runs.RunFileError as e:  # a corrupt metrics.jsonl: this run is not drawn, the others are
                st.error(f"{name} is unreadable: {e}")
                continue
            steps, epochs = c["step"], c["epoch"]
            mode = "lines" if len(steps) > 30 else "lines+markers"  # a single logged step still shows
            loss.add_scatter(x=[r["step"] for r in steps], y=[r["total"] for r in steps], name=name, mode=mode)
            lr.add_scatter(x=[r["step"] for r in steps], y=[r["lr"] for r in steps], name=name, mode=mode)
            trained = [r for r in epochs if r["epoch"] > 0]
            for term, meaning in run_terms(info.path).items():
                if term != "total" and any(f"train_{term}" in r for r in trained):
                    terms.add_scatter(
                        x=[r["epoch"] for r in trained], y=[r.get(f"train_{term}") for r in trained],
                        name=f"{name}: {term}", mode="lines+markers", hovertext=meaning,
                    )  # fmt: skip
            for level in LEVELS:
                points = [(r["epoch"], r[f"knn_{level}"]) for r in epochs if r.get(f"knn_{level}") is not None]
                if points:
                    knn.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=f"{name}: {level}")
            speed.add_scatter(x=[r["epoch"] for r in trained], y=[r.get("pairs_per_s") for r in trained], name=name)
            if info.state in ("failed", "dead"):
                st.error(f"{name}: {info.error or 'the process is gone'}")
        left, right = st.columns(2)
        left.plotly_chart(loss, use_container_width=True)
        right.plotly_chart(knn, use_container_width=True)
        left.plotly_chart(terms, use_container_width=True)
        right.plotly_chart(lr, use_container_width=True)
        left.plotly_chart(speed, use_container_width=True)
        finetuning = finetune_figure(chosen)
        if finetuning.data:
            right.plotly_chart(finetuning, use_container_width=True)
        else:
            right.caption(
                "Fine-tune these runs' backbones and a random init on the Evaluate page to compare how fast each "
                "converges (the paper's Figure 1c)."
            )

    draw()


def run_terms(path: Path) -> dict[str, str]:
    """The loss terms of a run's method (name -> one-line meaning), from its config.yaml; torch-free."""
    try:
        config = yaml.safe_load((Path(path) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    return term_names(config)


def finetune_figure(chosen: list) -> go.Figure:
    """Test accuracy per fine-tuning epoch of each run's newest fine-tuning, and of a random init's (the paper's
    Figure 1c: how fast a pretrained backbone converges downstream)."""
    fig = _figure("Fine-tuning: test accuracy after each epoch, all folds (Figure 1c)", "epoch", "accuracy")
    curves = [(info.name, runs.finetune_curve(info.path / "finetune")) for info in chosen]
    curves.append(("random init", runs.finetune_curve(runs_root() / "finetune-random")))
    for name, curve in curves:
        if curve is not None:
            fig.add_scatter(x=curve["epoch"], y=curve["accuracy"], name=name, mode="lines+markers")
    return fig
