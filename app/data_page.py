"""Data: a dataset's classes, videos and frames, sample frames per class, and a positive pair as training makes it."""

from __future__ import annotations

import streamlit as st

from common import check_dataset_path, choose_dataset, dataset_path, load_dataset


def page() -> None:
    st.header("Data")
    # The box is bound to its key, and filled from the session's dataset only when it has no state of its own (a
    # new session, or back from another page): a `value=` that followed the loaded dataset made Streamlit see a
    # new widget after each edit and put the previous folder back in the box.
    if "dataset_input" not in st.session_state:
        st.session_state["dataset_input"] = str(dataset_path())
    text = st.text_input(
        "Dataset folder",
        key="dataset_input",
        help="root/<class>/<video>/<n>.jpg frame folders or root/<class>/<video>.mp4 clips; optional index.csv",
    )
    try:
        path = check_dataset_path(text)
        videos = load_dataset(str(path))
    except ValueError as e:
        st.error(str(e))
        return
    choose_dataset(path)

    s = videos.summary()
    cols = st.columns(5)
    for col, (label, value) in zip(
        cols,
        [("classes", len(s["classes"])), ("videos", s["videos"]), ("frames", s["frames"]), ("groups", s["groups"]),
         ("unreadable", len(videos.unreadable))],
        strict=True,
    ):  # fmt: skip
        col.metric(label, f"{value:,}")
    st.dataframe([{"class": c, "videos": n} for c, n in s["classes"].items()], hide_index=True, width="content")
    if videos.unreadable:
        with st.expander(f"{len(videos.unreadable)} unreadable files (skipped)"):
            st.text("\n".join(reason for _, reason in videos.unreadable))
    if videos.refused:
        st.warning(
            f"{len(videos.refused)} rows of index.csv refused: their files lie outside the dataset folder, "
            "so they were neither read nor shown."
        )
        with st.expander(f"{len(videos.refused)} refused rows"):
            st.text("\n".join(reason for _, reason in videos.refused))

    st.subheader("Sample frames")
    labels = videos.labels
    for k, name in enumerate(videos.classes):
        picks = [i for i in range(len(videos)) if labels[i] == k][:6]
        st.caption(f"{name}: the middle frame of {len(picks)} videos")
        st.image([videos.frames(i)[videos.n_frames(i) // 2] for i in picks], width=110)

    st.subheader("A positive pair")
    c1, c2, c3 = st.columns(3)
    sampler = c1.radio(
        "Sampler", ["hico", "uscl"], horizontal=True,
        format_func={"hico": "HiCo: two frames", "uscl": "USCL: three frames, mixed"}.get,
    )  # fmt: skip
    names = [f"{v.label} / {v.video_id}" for v in videos.videos]
    video = c2.selectbox("Video", range(len(videos)), format_func=names.__getitem__)
    seed = c3.number_input("Seed", min_value=0, value=0, step=1, help="another seed, another pair")
    strength = st.slider("Colour jitter strength", 0.0, 1.0, 0.8, 0.1, help="brightness and contrast, as in HiCo")
    from hico.demo import pair_images

    pair = pair_images(
        videos, int(video), sampler, size=112, seed=int(seed), augment={"brightness": strength, "contrast": strength}
    )
    frames = [f"frame {i}" for i in pair["indices"]]
    if sampler == "uscl":
        st.caption(
            f"mix weight w = {pair['weight']:.2f} (Beta(0.5, 0.5)): view 1 = w f1 + (1-w) f2, view 2 = w f3 + (1-w) f2"
        )
    st.image(pair["frames"], caption=frames, width=130)
    st.image(pair["views"], caption=["view 1 (augmented)", "view 2 (augmented)"], width=130)
