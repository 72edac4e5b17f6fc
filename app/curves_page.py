"""Curves: loss terms, learning rate, k-NN accuracy per level and throughput of one or several runs, live."""

from __future__ import annotations

from pathlib import Path

import plotly.colors
import plotly.graph_objects as go
import streamlit as st
import yaml

from hico import runs
from hico.methods import chance_level
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


# every run keeps one colour on every chart; the terms of a run (and the k-NN levels) are told apart by dash, and
# "dot" is kept for the chance levels
COLOURS = plotly.colors.qualitative.Plotly
DASHES = ("solid", "dash", "longdash", "dashdot", "longdashdot", "12px,3px,3px,3px,3px,3px", "2px,6px")
TITLE_CHARS = 40  # a longer title is cut off on a half-width chart: the details go into the captions


def _figure(title: str, x: str, y: str) -> go.Figure:
    if len(title) > TITLE_CHARS:
        raise ValueError(f"chart title over {TITLE_CHARS} characters (it would be cut off): {title!r}")
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, height=320, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def _chance_lines(fig: go.Figure, name: str, colour: str, xs: list, levels: dict[str, float]) -> None:
    """A dotted horizontal line in the run's colour at each distinct chance level (term -> value) over ``xs``."""
    if not xs:
        return
    by_value: dict[float, list[str]] = {}
    for term, value in levels.items():
        by_value.setdefault(round(value, 6), []).append(term)
    for value, terms in by_value.items():
        fig.add_scatter(
            x=[min(xs), max(xs)], y=[value, value], mode="lines", line=dict(color=colour, dash="dot", width=1),
            name=f"{name}: chance", showlegend=False, hovertext=f"{name}: {', '.join(terms)} at chance = {value:.3f}",
        )  # fmt: skip


def _chance(config: dict, term: str) -> float | None:
    """:func:`hico.methods.chance_level`, or None where the run's config.yaml holds a value of the wrong type."""
    try:
        return chance_level(config, term)
    except (TypeError, ValueError):
        return None


def charts(chosen: list, live: bool) -> None:
    @st.fragment(run_every=2.0 if live else None)
    def draw() -> None:
        loss = _figure("Training loss per step", "step", "loss")
        terms = _figure("Loss terms (epoch means)", "epoch", "loss")
        knn = _figure("k-NN accuracy per level", "epoch", "accuracy")
        lr = _figure("Learning rate", "step", "lr")
        speed = _figure("Throughput", "epoch", "pairs/s")
        sims = _figure("Held-out pairs: cosine similarity", "epoch", "cosine similarity")
        for i, info in enumerate(chosen):
            name, colour = info.name, COLOURS[i % len(COLOURS)]
            try:
                c = runs.curves(info.path)
            except runs.RunFileError as e:  # a corrupt metrics.jsonl: this run is not drawn, the others are
                st.error(f"{name} is unreadable: {e}")
                continue
            config = run_config(info.path)
            steps, epochs = c["step"], c["epoch"]
            mode = "lines" if len(steps) > 30 else "lines+markers"  # a single logged step still shows
            line = dict(color=colour)
            step_x = [r["step"] for r in steps]
            loss.add_scatter(x=step_x, y=[r["total"] for r in steps], name=name, mode=mode, line=line)
            total_chance = _chance(config, "total")
            if total_chance is not None:
                _chance_lines(loss, name, colour, step_x, {"total": total_chance})
            lr.add_scatter(x=step_x, y=[r["lr"] for r in steps], name=name, mode=mode, line=line)
            trained = [r for r in epochs if r["epoch"] > 0]
            epoch_x = [r["epoch"] for r in trained]
            levels = {}
            for j, (term, meaning) in enumerate(t for t in term_names(config).items() if t[0] != "total"):
                values = [r.get(f"train_{term}") for r in trained]
                if not any(v for v in values):  # never logged, or always 0 (a term switched off): not drawn
                    continue
                terms.add_scatter(
                    x=epoch_x, y=values, name=f"{name}: {term}", mode="lines+markers", hovertext=meaning,
                    line=dict(color=colour, dash=DASHES[j % len(DASHES)]),
                )  # fmt: skip
                if (value := _chance(config, term)) is not None:
                    levels[term] = value
            _chance_lines(terms, name, colour, epoch_x, levels)
            for level, dash in zip(LEVELS, DASHES, strict=False):
                points = [(r["epoch"], r[f"knn_{level}"]) for r in epochs if r.get(f"knn_{level}") is not None]
                if points:
                    knn.add_scatter(
                        x=[p[0] for p in points], y=[p[1] for p in points], name=f"{name}: {level}",
                        line=dict(color=colour, dash=dash),
                    )  # fmt: skip
            speed.add_scatter(x=epoch_x, y=[r.get("pairs_per_s") for r in trained], name=name, line=line)
            for key, label, dash in (("pos", "positive pairs", "solid"), ("neg", "negatives", "dot")):
                points = [(r["epoch"], r[f"holdout_{key}_sim"]) for r in epochs if f"holdout_{key}_sim" in r]
                if points:
                    sims.add_scatter(
                        x=[p[0] for p in points], y=[p[1] for p in points], name=f"{name}: {label}",
                        line=dict(color=colour, dash=dash),
                    )  # fmt: skip
            if info.state in ("failed", "dead"):
                st.error(f"{name}: {info.error or 'the process is gone'}")
        left, right = st.columns(2)
        left.plotly_chart(loss, width="stretch")
        right.plotly_chart(knn, width="stretch")
        left.plotly_chart(terms, width="stretch")
        right.plotly_chart(lr, width="stretch")
        left.plotly_chart(speed, width="stretch")
        if sims.data:
            left.plotly_chart(sims, width="stretch")
            left.caption(
                "Global embeddings of fixed pairs of held-out videos: learning pulls the two frames of a pair together "
                "(solid) and keeps frames of different videos apart (dotted). A random network maps everything alike."
            )
        finetuning = finetune_figure(chosen)
        if finetuning.data:
            right.plotly_chart(finetuning, width="stretch")
        else:
            right.caption(
                "Fine-tune these runs' backbones and a random init on the Evaluate page to compare how fast each "
                "converges (the paper's Figure 1c)."
            )
        st.caption(
            "One colour per run; a run's terms and k-NN levels are told apart by dash. Dotted: the run's loss at "
            "chance (embeddings that tell nothing apart): ln(2N - 1) per InfoNCE of a global batch of N pairs "
            "(train.batch_size, gathered over every process), ln K per cross-entropy of K classes, "
            "ln(1 + negatives + queue) for MoCo; BYOL has none. A loss far below it has learnt something. "
            "k-NN accuracy is of held-out videos, per pyramid level; epoch 0 is before training."
        )

    draw()


def run_config(path: Path) -> dict:
    """A run's config.yaml as a dict ({} when it is missing or unreadable); torch-free."""
    try:
        config = yaml.safe_load((Path(path) / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    return config if isinstance(config, dict) else {}


def run_terms(path: Path) -> dict[str, str]:
    """The loss terms of a run's method (name -> one-line meaning), from its config.yaml; torch-free."""
    return term_names(run_config(path))


def finetune_figure(chosen: list) -> go.Figure:
    """Test accuracy per fine-tuning epoch of each run's newest fine-tuning, and of a random init's (the paper's
    Figure 1c: how fast a pretrained backbone converges downstream)."""
    fig = _figure("Fine-tuning accuracy (Figure 1c)", "epoch", "test accuracy, all folds")
    curves = [(info.name, COLOURS[i % len(COLOURS)], runs.finetune_curve(runs.finetune_folder(str(info.path))))
              for i, info in enumerate(chosen)]  # fmt: skip
    curves.append(("random init", "grey", runs.finetune_curve(runs.finetune_folder("random", runs_root()))))
    for name, colour, curve in curves:
        if curve is not None:
            fig.add_scatter(
                x=curve["epoch"], y=curve["accuracy"], name=name, mode="lines+markers", line=dict(color=colour)
            )
    return fig
