"""The Embeddings page's three UMAP maps as one Streamlit component whose points show their frame on hover.

Plotly's hover labels hold text only, and Streamlit's plotly chart reports clicks and selections but not hovers,
so the maps are drawn by a small component (``level_maps.html``, plotly.js, no build step). Hovering a point shows
its frame thumbnail, class, video and frame number, and rings the same frame on the other two maps; clicking a
point returns its row, for the nearest neighbours.
"""

from __future__ import annotations

import base64
import io
import os
from importlib import resources
from pathlib import Path

import numpy as np
import streamlit.components.v1 as components

HTML = Path(__file__).resolve().parent / "level_maps.html"
THUMB = 64  # px: thumbnails travel as JPEG data URIs, about 2 kB each


def component_dir() -> Path:
    """A folder Streamlit serves to the component: ``level_maps.html`` as ``index.html`` and ``plotly.min.js`` from
    the installed plotly package (Streamlit serves nothing outside the folder, symlinks included, hence copies in
    the hico cache rather than a 5 MB file in the repository)."""
    import plotly

    from hico.data.cache import default_cache_dir

    folder = default_cache_dir() / "app" / f"level_maps-plotly{plotly.__version__}"
    folder.mkdir(parents=True, exist_ok=True)
    plotly_js = resources.files("plotly") / "package_data" / "plotly.min.js"
    for source, name in ((HTML, "index.html"), (plotly_js, "plotly.min.js")):
        target = folder / name
        data = source.read_bytes()
        if not target.is_file() or target.stat().st_size != len(data) or target.read_bytes() != data:
            tmp = target.with_name(f".{name}.{os.getpid()}.tmp")  # another server may be copying it too
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return folder


_render = components.declare_component("level_maps", path=str(component_dir()))


def level_maps_chart(payload: dict, key: str) -> int | None:
    """Draw the maps of :func:`map_payload`; the row of the frame last clicked (None before any click)."""
    value = _render(payload=payload, key=key, default=None)
    row = (value or {}).get("row")
    return int(row) if row is not None and 0 <= int(row) < len(payload["text"]) else None


def map_payload(maps: dict, colour: str, thumbs: list[str], key: str, height: int = 380) -> dict:
    """What the component draws, as JSON: per level its name and 2-D coordinates, the point groups (one trace each:
    the classes, or the videos with ``colour="video"``), and per frame a caption and a thumbnail data URI.

    ``key`` names the maps' content: the component redraws only when it changes.
    """
    if colour == "class":
        groups = [(name, np.flatnonzero(maps["labels"] == g)) for g, name in enumerate(maps["classes"])]
    else:
        ids = np.asarray(maps["video_ids"])
        groups = [(name, np.flatnonzero(ids == name)) for name in sorted(set(ids.tolist()))]
    text = [
        f"{maps['classes'][label]} · {video} · frame {frame}"
        for label, video, frame in zip(maps["labels"], maps["video_ids"], maps["frame"], strict=True)
    ]
    return {
        "key": f"{key}:{colour}",
        "levels": [
            {
                "name": name,
                "x": np.round(xy[:, 0].astype(float), 3).tolist(),
                "y": np.round(xy[:, 1].astype(float), 3).tolist(),
            }
            for name, xy in maps["umap"].items()
        ],
        "groups": [{"name": str(name), "rows": rows.tolist()} for name, rows in groups if len(rows)],
        "legend": colour == "class",
        "text": text,
        "thumbs": list(thumbs),
        "selected": None,
        "height": height,
    }


def thumbnail_uris(frames, size: int = THUMB) -> list[str]:
    """``data:image/jpeg;base64,...`` of each frame (H, W) or (H, W, C) uint8, resized to ``size`` px."""
    from hico.eval.embed import thumbnail

    out = []
    for frame in frames:
        buf = io.BytesIO()
        thumbnail(frame, size).save(buf, format="JPEG", quality=80)
        out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return out
