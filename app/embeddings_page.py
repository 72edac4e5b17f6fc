"""Embeddings: UMAP maps of the local, medium and global features side by side, for any run and checkpoint.

The epoch slider goes over the checkpoints the trainer keeps at epochs 0, 1, 2, 4, ... and the last
(``checkpoints/epoch_NNNN.pt``); for a run without them (``train.epoch_checkpoints=false``), over the k-NN features
it kept at those epochs (``features/epoch_NNNN.npz``). Maps are cached per checkpoint and per frame selection.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import streamlit as st

from hico import runs

from common import check_dataset_path, load_dataset, readable_runs, runs_root


def page() -> None:
    st.header("Embeddings")
    all_runs = [
        r
        for r in readable_runs(runs.list_runs(runs_root()))
        if runs.epoch_features(r.path) or runs.epoch_checkpoints(r.path) or runs.checkpoints(r.path)
    ]
    if not all_runs:
        st.info("No run to map yet: launch one on the Train page (the demo preset takes about two minutes).")
        return
    c1, c2, c3 = st.columns([2, 2, 1])
    run = c1.selectbox("Run", all_runs, format_func=lambda r: f"{r.name} ({r.method}, {r.state})")
    epoch_files = runs.epoch_checkpoints(run.path)
    snapshots = runs.epoch_features(run.path)  # runs without epoch checkpoints keep these
    saved = runs.checkpoints(run.path)
    modes = (["epochs during training"] if epoch_files or snapshots else []) + list(saved)
    mode = c2.selectbox("Features", modes + ["random init"])
    colour = c3.radio("Colour by", ["class", "video"])

    try:
        data = check_dataset_path(run.data)
    except ValueError as e:
        st.error(f"the run's dataset: {e}")
        return
    from_features = mode == "epochs during training" and not epoch_files  # the k-NN features kept at the epochs
    if mode == "epochs during training":
        kept = snapshots if from_features else epoch_files
        epoch = st.select_slider("Epoch (0: before training)", list(kept), value=max(kept))
    per_video = None if from_features else st.slider("Frames per video", 1, 32, 8)

    from hico.eval.maps import features_key

    def maps_of(source: str) -> tuple[dict, str]:
        """The maps of a features file or a checkpoint (``random``: random init), and a key naming them."""
        key = features_key(source, per_video)
        if from_features:
            return snapshot_maps(source, key), key
        return checkpoint_maps(source, key, str(data), int(run_size(run.path)), per_video, bar=bar), key

    bar = st.empty()  # the extraction's progress (a checkpoint's features, the first time they are asked for)

    with st.spinner("Extracting features and computing the maps (UMAP; the first map also compiles numba, ~20 s)..."):
        try:
            if mode == "epochs during training":
                maps, key = maps_of(str(kept[epoch]))
                if epoch != max(kept):  # on the last epoch's map: the slider moves the points, it does not spin it
                    maps = aligned(maps, maps_of(str(kept[max(kept)]))[0])
            else:
                maps, key = maps_of("random" if mode == "random init" else str(saved[mode]))
        except (ValueError, OSError, zipfile.BadZipFile) as e:  # not a checkpoint, or not one that fits: one line
            st.error(str(e))
            return
    show(maps, colour, str(data), hashlib.sha1(key.encode()).hexdigest()[:16])


def run_size(path: Path) -> int:
    import yaml

    return yaml.safe_load((path / "config.yaml").read_text())["augment"]["size"]


def aligned(maps: dict, reference: dict) -> dict:
    """``maps`` with each level's UMAP aligned on ``reference``'s (:func:`hico.eval.maps.align_map`), when both map
    the same frames; unchanged otherwise."""
    from hico.eval.maps import align_map

    same = np.array_equal(maps["video"], reference["video"]) and np.array_equal(maps["frame"], reference["frame"])
    if not same:
        return maps
    return {**maps, "umap": {k: align_map(xy, reference["umap"][k]) for k, xy in maps["umap"].items()}}


@st.cache_data(max_entries=32, show_spinner=False)
def snapshot_maps(path: str, key: str) -> dict:
    """Maps of features saved during training (``key`` changes when the file does)."""
    from hico.eval.features import Features
    from hico.eval.maps import level_maps

    return level_maps(Features.load(path))


def checkpoint_maps(spec: str, key: str, data: str, size: int, per_video: int, bar=None) -> dict:
    """Maps of a checkpoint's features on the dataset (``key`` changes when the checkpoint does).

    The features are kept on disk (:func:`hico.eval.maps.features_cache_file`), extracted the first time with a
    progress bar in ``bar`` (an ``st.empty`` slot); the maps of that file are cached (:func:`snapshot_maps`) and UMAP
    keeps its own disk cache, so a checkpoint mapped once maps again in a fraction of a second after the app restarts.
    """
    from hico.eval.features import Features, extract_features
    from hico.eval.maps import features_cache_file
    from hico.models import resolve_backbone

    videos = load_dataset(data)
    path = features_cache_file(key, data, size, per_video, videos)
    try:
        Features.load(path)
    except (OSError, ValueError, zipfile.BadZipFile):  # not there yet, or unreadable: extract again

        def shown(done: int, total: int) -> None:
            if bar is not None:
                bar.progress(done / max(total, 1), text=f"Extracting features: {done} of {total} frames")

        features = extract_features(
            resolve_backbone(spec, seed=0), videos, size=size, per_video=per_video, on_batch=shown
        )
        features.save(path)
        if bar is not None:
            bar.empty()
    return snapshot_maps(str(path), f"{key}|{path.stat().st_mtime_ns}")


def show(maps: dict, colour: str, data: str, key: str) -> None:
    """The three maps side by side (hover: the frame; click: its nearest neighbours) and their readouts."""
    from level_maps import level_maps_chart, map_payload

    for col, name in zip(st.columns(len(maps["umap"])), maps["umap"], strict=True):
        col.markdown(
            f"**{name}** · k-NN {100 * maps['knn'][name]:.1f}% · silhouette {maps['silhouette'][name]:.2f}",
            help="k-NN: each video's frames classified by the other videos' frames (k = 10). Silhouette: how well "
            "the classes separate (cosine; 1 = perfectly, 0 = not at all).",
        )
    thumbs = frame_thumbnails(data, maps["video_ids"], maps["frame"])
    selected = level_maps_chart(map_payload(maps, colour, thumbs, key), key=f"maps-{key}")
    if selected is None:
        st.caption("Hover over a point to see its frame; click it to see its nearest neighbours at each level.")
        return
    neighbours(maps, selected, data)


@st.cache_data(max_entries=16, show_spinner=False)
def frame_thumbnails(data: str, video_ids: np.ndarray, frames: np.ndarray) -> list[str]:
    """JPEG data URIs of the mapped frames (cached per dataset and frame list)."""
    from level_maps import thumbnail_uris

    return thumbnail_uris(pictures(data, video_ids, frames))


def pictures(data: str, video_ids, frames) -> list[np.ndarray]:
    """Frame ``frames[n]`` of video ``video_ids[n]`` of the dataset, for each n."""
    videos = load_dataset(data)
    index = {v.video_id: i for i, v in enumerate(videos.videos)}
    return [videos.frames(index[v])[int(f)] for v, f in zip(video_ids, frames, strict=True)]


def neighbours(maps: dict, row: int, data: str) -> None:
    from hico.eval.maps import nearest

    def images(rows) -> list[np.ndarray]:
        return pictures(data, [maps["video_ids"][i] for i in rows], [maps["frame"][i] for i in rows])

    def caption(i: int) -> str:
        return f"{maps['classes'][maps['labels'][i]]} · {maps['video_ids'][i]} · {maps['frame'][i]}"

    st.subheader("The frame and its nearest neighbours")
    st.image(images([row])[0], caption=caption(row), width=160)
    for name, x in maps["levels"].items():
        near = nearest(x, row, n=6)
        st.caption(f"{name} level")
        st.image(images(near), caption=[caption(i) for i in near], width=110)
