"""Train: choose a method and its settings, launch ``hico pretrain`` in the background; list, follow, stop, resume
and delete runs."""

from __future__ import annotations

import math

import streamlit as st

from hico import runs

from common import SAMPLES, dataset_path, runs_root

STATE_ICONS = {"running": "🟢", "starting": "⏳", "finished": "✅", "failed": "❌", "interrupted": "⏸️", "dead": "💀",
               "unreadable": "⚠️"}  # fmt: skip
MIN_STEPS_PER_EPOCH = 10  # fewer, and an epoch's curves have hardly a point
SCALES = {  # starting points of the form: (epochs, batch, size, lr, pairs per video)
    "demo scale: about 2 minutes on a laptop CPU (32 px, many small steps)": (30, 16, 32, 0.003, 8),
    "paper scale: 224 px, batch 32, lr 3e-4, one pair per video (a GPU's work)": (300, 32, 224, 3e-4, 1),
}


def page() -> None:
    st.header("Train")
    launch_form()
    st.subheader("Runs")
    if st.button("Launch the demo preset", help="HiCo on data_samples/ at the classroom scale: about 2 minutes"):
        start("hico", None, [], preset="demo")
    run_table()


def choose_method() -> str:
    """A method of the paper's families, or a row of the paper's ablation tables; its description below."""
    from hico.config import ABLATION_PREFIX, load_method, method_names

    group = st.radio("Methods", ["methods", "ablation rows (the paper's Tables 1-3)"], horizontal=True)
    if group == "methods":
        options = method_names(ablation=False)
        method = st.selectbox("Method", options, index=options.index("hico"))
    else:
        options = method_names(ablation=True)
        method = st.selectbox("Ablation row", options, format_func=lambda n: n.removeprefix(ABLATION_PREFIX))
    st.caption(" ".join(load_method(method).description.split()))
    return method


def launch_form() -> None:
    from hico.config import load_method
    from hico.names import KNOBS

    data = dataset_path()
    st.caption(f"Dataset: `{data}` (change it on the Data page)")
    # The method is chosen outside the form: a change reruns the page, so the settings below show (and launch
    # with) that method's knobs and defaults, not the previous method's.
    method = choose_method()
    cfg = load_method(method)
    scale = st.radio("Starting point", list(SCALES), horizontal=False)
    epochs0, batch0, size0, lr0, pairs0 = SCALES[scale]
    n_videos = _videos(data)
    with st.form("launch"):
        c1, c2, c3, c4, c5 = st.columns(5)
        epochs = c1.number_input("Epochs", 1, 1000, epochs0, key=f"epochs-{scale}")
        batch = c2.number_input("Batch (pairs)", 2, 1024, batch0, key=f"batch-{scale}")
        size = c3.number_input("Image size (px)", 32, 512, size0, step=16, key=f"size-{scale}")
        lr = c4.number_input("Learning rate", 1e-6, 1.0, lr0, format="%.5f", key=f"lr-{scale}")
        pairs = c5.number_input("Pairs per video", 1, 256, pairs0, key=f"pairs-{scale}",
                                help="pairs drawn from each video per epoch: more steps per epoch")  # fmt: skip
        knobs = KNOBS.get(cfg.loss.kind, {})
        values = {}
        for column, (key, (label, meaning)) in zip(st.columns(max(1, len(knobs))), knobs.items(), strict=False):
            default = getattr(cfg.loss, key)
            if isinstance(default, int) and not isinstance(default, bool):
                values[key] = column.number_input(label, 1, 1_000_000, default, help=meaning, key=f"{key}-{method}")
            else:
                values[key] = column.number_input(label, 0.0, 10.0, float(default), 0.01, format="%.3f",
                                                  help=meaning, key=f"{key}-{method}")  # fmt: skip
        device = st.selectbox("Device", ["auto", "cpu", "cuda", "mps"])
        more = st.text_area(
            "More settings",
            placeholder="model.num_classes=4\ndata.label_rate=0.5",
            help="one KEY=VALUE per line, as `hico pretrain --set KEY=VALUE`; they win over the fields above. "
            "The number of classes is taken from the dataset unless model.num_classes is given.",
        )
        submitted = st.form_submit_button("Launch", type="primary")
    steps = _steps_per_epoch(n_videos, cfg.train.holdout, int(pairs), int(batch))
    if steps is not None and steps < MIN_STEPS_PER_EPOCH:
        trained = _steps_per_epoch(n_videos, cfg.train.holdout, 1, 1)  # videos trained on
        need = math.ceil(MIN_STEPS_PER_EPOCH * batch / max(trained, 1))
        st.warning(
            f"An epoch here is {steps} optimiser step{'s' * (steps != 1)} ({n_videos} videos, a share held out, "
            f"{pairs} pair{'s' * (pairs != 1)} per video, batch {batch}): its curves will have hardly a point, and "
            f"it compares badly with longer runs. Raise pairs per video to {need} or more (or start from the demo "
            "scale)."
        )
    if submitted:
        overrides = [
            "model.init=random", f"train.epochs={epochs}", f"train.batch_size={batch}", f"augment.size={size}",
            f"train.lr={lr}", f"train.pairs_per_video={pairs}", f"train.device={device}",
            *(f"loss.{k}={v}" for k, v in values.items()),
            "data.working_size=128" if data == SAMPLES and size <= 128 else f"data.working_size={max(2 * size, 64)}",
        ]  # fmt: skip
        start(method, data, overrides + [line.strip() for line in more.splitlines() if line.strip()])


def _videos(data) -> int | None:
    from hico.data import scan

    try:
        return len(scan(data).videos)
    except (ValueError, OSError):
        return None


def _steps_per_epoch(videos: int | None, holdout: float, pairs: int, batch: int) -> int | None:
    """Optimiser steps of one epoch (about: the held-out share is rounded per patient group)."""
    if not videos:
        return None
    return (videos - round(holdout * videos)) * pairs // batch


def start(method: str, data, overrides: list[str], preset: str | None = None) -> None:
    from hico.config import load_method, resolve_classes
    from hico.data import scan

    try:
        if preset is None:  # a bad value, or a number of classes the data has not, is reported here
            resolve_classes(load_method(method, overrides), scan(data).classes, str(data))
        out, _ = runs.launch(method, data, overrides, preset=preset, root=runs_root())
    except ValueError as e:
        st.error(str(e))
        return
    st.success(f"Launched `{out.name}`: it runs in its own process; follow it on the Curves page.")


def run_table() -> None:
    if not runs.list_runs(runs_root()):
        st.info("No runs yet. The demo preset pretrains HiCo on data_samples/ in about two minutes on a laptop CPU.")
        return
    live = st.toggle("Refresh every 3 s", value=True)

    @st.fragment(run_every=3.0 if live else None)
    def table() -> None:
        for info in runs.list_runs(runs_root()):
            run_row(info)

    table()


def run_row(info: runs.RunInfo) -> None:
    c1, c2, c3 = st.columns([6, 1, 1])
    icon = STATE_ICONS.get(info.state, "")
    c1.markdown(f"{icon} **{info.name}** · {info.method} · {info.state} · epoch {info.epoch}/{info.epochs}")
    if info.state == "running" and (p := runs.progress(info.path)):
        left = "" if p["seconds_left"] is None else f" · about {_duration(p['seconds_left'])} left"
        c1.progress(min(1.0, p["step"] / max(1, p["steps"])), text=f"step {p['step']} of {p['steps']}{left}")
    if info.error and info.state in ("failed", "interrupted", "dead", "unreadable"):
        c1.caption(info.error)
    key = info.name
    if info.state == "running" and c2.button("Stop", key=f"stop-{key}"):
        runs.stop(info.path)
        st.toast(f"Asked {info.name} to stop: it saves its checkpoint first")
    if info.state in ("interrupted", "failed", "dead") and (info.path / "checkpoints" / "last.pt").is_file():
        if c2.button("Resume", key=f"resume-{key}"):
            try:
                runs.resume(info.path)
                st.toast(f"Resuming {info.name}")
            except ValueError as e:
                st.error(str(e))
    if info.state not in ("running", "starting"):
        with c3.popover("Delete"):
            st.write(f"Delete `{info.name}` and everything in it?")
            if st.button("Delete for good", key=f"delete-{key}", type="primary"):
                runs.delete(info.path)
                st.rerun()
    with c1.expander("Settings and log"):
        config = info.path / "config.yaml"
        if config.is_file():
            st.code(config.read_text(errors="replace"), language="yaml")
        log = runs.log_path(info.path)
        if log.is_file():
            st.code("\n".join(log.read_text(errors="replace").splitlines()[-30:]) or "(empty log)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
