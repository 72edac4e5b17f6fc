"""Per-frame embeddings for inspection: features at three levels, frame thumbnails, optional 2-D UMAP.

``hico embed --backbone RUNDIR --data PATH --out emb.npz [--umap]`` writes:

- ``emb.npz``: everything :meth:`hico.eval.features.Features.save` stores (``level_local``, ``level_medium``,
  ``level_global`` (F, D) float32, ``labels``, ``video``, ``frame``, ``groups``, ``classes``, ``video_ids``,
  ``meta``), plus ``class_name`` (F,) and ``video_id`` (F,) strings, ``thumb`` (F,): the thumbnail path of
  each frame relative to the npz's folder, and with ``--umap`` ``umap_local``, ``umap_medium``,
  ``umap_global`` (F, 2) float32. Load it with ``Features.load`` (the extra arrays land in ``.extra``) or
  ``np.load`` (no pickle needed).
- ``emb_thumbs/NNNNNN.png``: a 64 px grey thumbnail of each frame, row N of the npz.

UMAP (umap-learn; n_neighbors=15, min_dist=0.1, cosine metric, 200 epochs, random_state=0) is cached on disk by
content: the key is the SHA-1 of the feature array's bytes, shape and dtype, the parameters and the umap version,
so the same features never go through UMAP twice (the first call in a process also pays numba's ~15 s
compilation). Up to 4,096 frames, where umap-learn computes every pairwise distance anyway, the cosine distances
are handed to it as one matrix product (``metric="precomputed"``): umap-learn would call its distance function
from Python once per pair (about 1.5 s of 2.3 s for 1,000 frames). 200 epochs is umap-learn's own choice above
10,000 points (500 below): on 1,024 POCUS frames it halves the time again for a trustworthiness of 0.993-0.994
(500 epochs: 0.994-0.995).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from hico.io import atomic_dir, atomic_write

UMAP_DEFAULTS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "n_epochs": 200, "random_state": 0}
"""Parameters of :func:`umap_2d` unless overridden."""

THUMB_SIZE = 64
PRECOMPUTED_UP_TO = 4096  # umap-learn's own threshold: below it, it computes all pairwise distances too


def umap_cache_dir() -> Path:
    """``<hico cache>/umap`` (``$HICO_CACHE/umap``, else ``~/.cache/hico/umap``)."""
    from hico.data.cache import default_cache_dir

    return default_cache_dir() / "umap"


def umap_key(x: np.ndarray, params: dict) -> str:
    """SHA-1 of ``x`` (bytes, shape, dtype), the UMAP parameters and the umap-learn version."""
    import umap

    x = np.ascontiguousarray(x)
    h = hashlib.sha1(f"{x.dtype.str}|{x.shape}|{json.dumps(params, sort_keys=True)}|{umap.__version__}|".encode())
    h.update(memoryview(x).cast("B"))
    return h.hexdigest()


def umap_2d(x: np.ndarray, cache_dir: str | os.PathLike[str] | None = None, **params) -> np.ndarray:
    """2-D UMAP coordinates of the rows of ``x``, (F, 2) float32, cached on disk by content.

    Args:
        x: (F, D) features (converted to float32).
        cache_dir: cache folder (default :func:`umap_cache_dir`); entries are ``<key>.npy``, written to a
            temporary file and renamed, so concurrent or killed runs never leave a truncated entry.
        **params: ``umap.UMAP`` arguments overriding :data:`UMAP_DEFAULTS`. ``n_neighbors`` is clipped to
            F - 1; fewer than 4 rows cannot be embedded and give zeros.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"umap_2d needs (F, D) features, got shape {x.shape}")
    params = {**UMAP_DEFAULTS, **params}
    if len(x) < 4:
        return np.zeros((len(x), 2), np.float32)
    folder = Path(cache_dir) if cache_dir is not None else umap_cache_dir()
    path = folder / f"{umap_key(x, params)}.npy"
    if path.is_file():
        try:
            y = np.load(path, allow_pickle=False)
            if y.shape == (len(x), 2):
                return y
        except (OSError, ValueError):
            pass  # unreadable entry: compute it again
    import umap

    fit = {**params, "n_neighbors": max(2, min(int(params["n_neighbors"]), len(x) - 1))}
    data = x
    if fit["metric"] == "cosine" and len(x) <= PRECOMPUTED_UP_TO:
        from sklearn.metrics.pairwise import cosine_distances  # in [0, 2], zero on the diagonal

        fit["metric"], data = "precomputed", cosine_distances(x.astype(np.float64))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # random_state forces one thread
        warnings.filterwarnings("ignore", message=".*Graph is not fully connected.*")
        warnings.filterwarnings("ignore", message=".*using precomputed metric.*")  # inverse_transform: not used
        y = umap.UMAP(n_components=2, **fit).fit_transform(data).astype(np.float32)
    atomic_write(path, lambda f: np.save(f, y), mode="wb")
    return y


def thumbs_dir(out: str | os.PathLike[str]) -> Path:
    """The thumbnail folder of an embedding file: ``emb.npz`` -> ``emb_thumbs``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_thumbs")


def thumbnail(frame: np.ndarray, size: int = THUMB_SIZE):
    """Frame (H, W) or (H, W, C) uint8 as a ``size`` x ``size`` PIL image (bilinear, antialiased when shrinking)."""
    from PIL import Image

    img = Image.fromarray(np.asarray(frame))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img


def write_thumbnails(videos, picks: np.ndarray, folder: Path, size: int = THUMB_SIZE) -> list[str]:
    """Save frame ``picks[n]`` as ``folder/NNNNNN.png`` (size x size grey); returns the file names in order.

    The folder is written next to its final place and swapped in at the end, replacing an older one.
    """
    names = []
    with atomic_dir(folder) as tmp:
        current, frames = -1, None
        for n, (v, f) in enumerate(picks):
            if v != current:
                current, frames = int(v), videos.frames(int(v))
            name = f"{n:06d}.png"
            thumbnail(frames[f], size).save(tmp / name)
            names.append(name)
    return names
