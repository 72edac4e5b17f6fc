"""Train: choose a method and its main settings, launch ``hico pretrain`` in the background, list and stop runs."""

from __future__ import annotations

import streamlit as st

from hico import runs

from common import SAMPLES, dataset_path, runs_root

STATE_ICONS = {"running": "🟢", "starting": "⏳", "finished": "✅", "failed": "❌", "interrupted": "⏸️", "dead": "💀",
               "unreadable": "⚠️"}  # fmt: skip


def page() -> None:
    st.header("Train")
    launch_form()
    st.subheader("Runs")
    run_table()


def launch_form() -> None:
    from hico.config import load_method, method_names

    names = method_names()
    data = dataset_path()
    st.caption(f"Dataset: `{data}` (change it on the Data page)")
    # The method is chosen outside the form: a change reruns the page, so the loss settings below show (and
    # launch with) that method's defaults, not the previous method's.
    method = st.selectbox("Method", names, index=names.index("hico"))
    defaults = load_method(method).loss
    with st.form("launch"):
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs", 1, 1000, 10)
        batch = c2.number_input("Batch (pairs)", 2, 1024, 16)
        size = c3.number_input("Image size (px)", 32, 512, 64, step=16)
        c1, c2, c3, c4, c5 = st.columns(5)
        lam = c1.number_input("lambda", 0.0, 1.0, float(defaults.lam), 0.05, help="peer vs cross-level weight",
                              key=f"lam-{method}")  # fmt: skip
        alpha = c2.number_input("alpha", 0.0, 1.0, float(defaults.alpha), 0.05, help="label smoothing",
                                key=f"alpha-{method}")  # fmt: skip
        beta = c3.number_input("beta", 0.0, 10.0, float(defaults.beta), 0.05, help="weight of the softened CE",
                               key=f"beta-{method}")  # fmt: skip
        temperature = c4.number_input("temperature", 0.01, 2.0, float(defaults.temperature), 0.01,
                                      key=f"temperature-{method}")  # fmt: skip
        device = c5.selectbox("Device", ["auto", "cpu", "cuda", "mps"])
        more = st.text_area(
            "More settings",
            placeholder="model.num_classes=4\ndata.label_rate=0.5",
            help="one KEY=VALUE per line, as `hico pretrain --set KEY=VALUE`; they win over the fields above. "
            "The number of classes is taken from the dataset unless model.num_classes is given.",
        )
        submitted = st.form_submit_button("Launch", type="primary")
    if submitted:
        overrides = [
            "model.init=random", f"train.epochs={epochs}", f"train.batch_size={batch}", f"augment.size={size}",
            f"loss.lam={lam}", f"loss.alpha={alpha}", f"loss.beta={beta}", f"loss.temperature={temperature}",
            f"train.device={device}", "data.working_size=128" if data == SAMPLES else f"data.working_size={max(size, 128)}",
        ]  # fmt: skip
        start(method, data, overrides + [line.strip() for line in more.splitlines() if line.strip()])


def start(method: str, data, overrides: list[str], preset: str | None = None) -> None:
    from hico.config import load_method, resolve_classes
    from hico.data import scan

    try:
        if (
            preset is None
        ):  # a bad value, or a number of classes the data has not, is reported here, not by a failed process
            resolve_classes(load_method(method, overrides), scan(data).classes, str(data))
        out, _ = runs.launch(method, data, overrides, preset=preset, root=runs_root())
    except ValueError as e:
        st.error(str(e))
        return
    st.success(f"Launched `{out.name}`: it runs in its own process; follow it on the Curves page.")


def run_table() -> None:
    all_runs = runs.list_runs(runs_root())
    if not all_runs:
        st.info("No runs yet. The demo preset pretrains HiCo on data_samples/ in about two minutes on a laptop CPU.")
        if st.button("Launch the demo preset", type="primary"):
            start("hico", None, [], preset="demo")
            st.rerun()
        return
    for info in all_runs:
        c1, c2 = st.columns([5, 1])
        icon = STATE_ICONS.get(info.state, "")
        c1.markdown(f"{icon} **{info.name}** · {info.method} · {info.state} · epoch {info.epoch}/{info.epochs}")
        if info.error and info.state in ("failed", "interrupted", "dead", "unreadable"):
            c1.caption(info.error)
        if info.state == "running" and c2.button("Stop", key=f"stop-{info.name}"):
            runs.stop(info.path)
            st.toast(f"Asked {info.name} to stop: it saves its checkpoint first")
