"""Synthetic lung-ultrasound videos: a small, seeded, CC0 sample set to run the whole workbench without patient data.

Each video is a convex-probe B-mode clip: a fan-shaped sector (black outside, apex at the top centre) filled with
multiplicative speckle, a bright pleural line whose texture *slides* laterally from frame to frame (lung sliding),
and the signs of one of three classes, as a clinician would name them:

- ``regular`` (normal lung): A-lines, horizontal reverberation arcs at integer multiples of the skin-to-pleura
  depth, fading with depth; sometimes one faint isolated B-line.
- ``covid`` (covid-like interstitial pattern): 1 to 5 B-lines, bright vertical comet tails from the pleural line
  to the bottom of the sector that move with sliding; a thickened, irregular pleural line; A-lines faint or
  absent; sometimes a small subpleural consolidation.
- ``pneumonia`` (pneumonia-like): a consolidation, a hypoechoic tissue-like (hepatised) patch under the pleura
  with bright branching dots (air bronchograms) and an irregular, bright deep border (shred sign).

Every video draws its own depth (pleura position, sector radius and angle), gain, speckle size, noise level,
probe drift (small rotation and depth shift over the clip), rib shadow, and number, position and strength of
signs, so that the classes overlap as real ones do: a linear probe on raw pixels stays well below 100 %.

The picture is built in polar coordinates (rows: depth from the probe surface, columns: beam angle), where the
lung layer is shifted laterally per frame, and scan-converted to the square frame at the end. numpy only.

Video ``i`` of class ``c`` depends only on ``(seed, c, i)``: :func:`write_dataset` seeds it with
``np.random.default_rng([seed, CLASSES.index(c), i])``.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hico.io import atomic_dir, atomic_write

CLASSES = ("covid", "pneumonia", "regular")

_JPEG_QUALITY = 90
_INDEX_COLUMNS = ("file", "video_id", "class", "split_group")


# ----------------------------------------------------------------------------------------------------------------
# small numerical helpers (private)


def _blur_axis(x: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur of x along one axis (reflecting edges), by shift-and-add: no BLAS, no threads."""
    n = x.shape[axis]
    radius = int(min(np.ceil(3 * sigma), n - 1))
    if sigma <= 0.05 or radius < 1:
        return x
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    x = np.moveaxis(x, axis, -1)
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(radius, radius)], mode="reflect")
    out = k[0] * xp[..., :n]
    for i in range(1, 2 * radius + 1):
        out += k[i] * xp[..., i : i + n]
    return np.moveaxis(out, -1, axis)


def _blur(x: np.ndarray, sigma_rows: float, sigma_cols: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes of x (..., H, W), float32."""
    x = np.asarray(x, dtype=np.float32)
    return _blur_axis(_blur_axis(x, sigma_rows, x.ndim - 2), sigma_cols, x.ndim - 1)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_rows: float, sigma_cols: float) -> np.ndarray:
    """Smooth Gaussian noise of ``shape`` (..., H, W), zero mean and unit standard deviation, float32."""
    x = _blur(rng.standard_normal(shape, dtype=np.float32), sigma_rows, sigma_cols)
    return (x - x.mean()) / (x.std() + 1e-8)


def _noise1d(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Smooth 1-D Gaussian noise (n,), zero mean and unit standard deviation."""
    return _noise(rng, (1, n), 0.0, sigma)[0]


def _sstep(x: np.ndarray | float, width: float = 1.0) -> np.ndarray:
    """Soft step (logistic) from 0 to 1 around x = 0, about ``4 * width`` wide."""
    return 1.0 / (1.0 + np.exp(np.clip(-np.asarray(x, dtype=np.float32) / width, -60, 60)))


def _shift_cols(a: np.ndarray, pad: int, width: int, shifts: np.ndarray) -> np.ndarray:
    """Per-frame lateral crops of a wide map: a (H, width + 2 pad) -> (T, H, width), content moved by +shifts[t].

    Column j of frame t reads column ``j + pad - shifts[t]`` of ``a`` (linear interpolation).
    """
    pos = np.arange(width)[None, :] + pad - shifts[:, None]  # (T, width)
    pos = np.clip(pos, 0, a.shape[1] - 1.001)
    i0 = np.floor(pos).astype(np.intp)
    w = (pos - i0).astype(np.float32)
    left, right = a[:, i0], a[:, i0 + 1]  # (H, T, width)
    return np.moveaxis(left * (1 - w) + right * w, 0, 1)


# ----------------------------------------------------------------------------------------------------------------
# the generator


def _strength(rng: np.random.Generator) -> float:
    """How pronounced the class signs of one video are: mostly clear, sometimes faint."""
    if rng.random() < 0.1:
        return float(rng.uniform(0.2, 0.45))
    return float(rng.uniform(0.45, 1.0))


def _bronchograms(
    rng: np.random.Generator, shape: tuple[int, int], ip: np.ndarray, u_lo: float, u_hi: float, h: np.ndarray
) -> np.ndarray:
    """Branching chains of bright dots (air bronchograms) inside a consolidation, as impulses (H, W) float32.

    ``ip`` (W,) is the pleura row, ``h`` (W,) the consolidation's depth below it, [u_lo, u_hi] its columns.
    """
    rows, width = shape
    out = np.zeros(shape, np.float32)
    n_trees = int(rng.integers(1, 4))
    for _ in range(n_trees):
        u = rng.uniform(u_lo + 0.2 * (u_hi - u_lo), u_hi - 0.2 * (u_hi - u_lo))
        ui = int(np.clip(u, 0, width - 1))
        if h[ui] < 4:
            continue
        stack = [(ip[ui] + rng.uniform(0.1, 0.35) * h[ui], u, rng.normal(0.0, 0.5))]
        n_dots = 0
        while stack and n_dots < 40:
            r, u, ang = stack.pop()
            for _step in range(int(rng.integers(4, 12))):
                ang += rng.normal(0.0, 0.25)
                r += 1.4 * np.cos(ang) * rows / 128
                u += 3.0 * np.sin(ang) * width / 128
                ui = int(np.clip(round(u), 0, width - 1))
                if not (0 <= u < width) or r < ip[ui] + 1.5 or r > ip[ui] + h[ui] - 1.5:
                    break
                if rng.random() < 0.55:
                    out[int(round(r)), ui] += rng.uniform(0.6, 1.3)
                    n_dots += 1
                if rng.random() < 0.12 and len(stack) < 4:
                    stack.append((r, u, ang + rng.choice((-1.0, 1.0)) * rng.uniform(0.4, 0.9)))
    return out


def _speckle(
    rng: np.random.Generator,
    n_frames: int,
    nd: int,
    na: int,
    pad: int,
    slide: np.ndarray,
    lung_mask: np.ndarray,
    sc: float,
) -> np.ndarray:
    """Multiplicative speckle (T, nd, na), mean about 1: the magnitude of a blurred complex Gaussian field.

    A persistent field (fixed in the chest wall, shifted by ``slide`` (T,) columns in the lung, where
    ``lung_mask`` (nd, na) is 1) is mixed with fresh noise each frame, so the speckle decorrelates slowly.
    """
    sr, sco = rng.uniform(0.55, 0.9) * sc, rng.uniform(1.8, 3.0) * sc
    rho = rng.uniform(0.6, 0.9)  # the part of the speckle power that persists from frame to frame

    def cplx(shape: tuple[int, ...]) -> np.ndarray:
        z = _blur(rng.standard_normal((2, *shape), dtype=np.float32), sr, sco)
        z = z / math.sqrt(float((z**2).mean()) * 2)
        return z[0] + 1j * z[1]

    z_pers = cplx((nd, na + 2 * pad))
    z_fresh = cplx((n_frames, nd, na))
    z_t = z_pers[None, :, pad : pad + na] * (1 - lung_mask) + _shift_cols(z_pers, pad, na, slide) * lung_mask
    amp = np.abs(math.sqrt(rho) * z_t + math.sqrt(1 - rho) * z_fresh) * (2 / math.sqrt(math.pi))
    mix = rng.uniform(0.75, 1.0)
    return (1 - mix) + mix * amp


def _scan_convert(
    polar: np.ndarray,
    size: int,
    r0: float,
    depth: float,
    theta: float,
    cy: float,
    drift_rows: np.ndarray,
    drift_cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Polar frames (T, nd, na) -> square frames (T, S, S) float32 and the sector mask (S, S) in [0, 1].

    The sector has its apex at (``cy``, centre column), radii [``r0``, ``r0 + depth``] and half-angle ``theta``;
    the picture inside it is shifted per frame by ``drift_rows`` (T,) and ``drift_cols`` (T,) polar cells (probe
    motion) while the sector itself stays put. Bilinear interpolation.
    """
    T, nd, na = polar.shape
    S = size
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    dx, dy = xx - (S - 1) / 2, yy - cy
    r = np.hypot(dx, dy)
    phi = np.arctan2(dx, dy)
    inside = np.minimum(np.minimum((theta - np.abs(phi)) * r, r0 + depth - r), r - r0)
    mask = np.clip(inside + 0.5, 0, 1)
    ri = (r - r0) / depth * nd - 0.5
    cj = (phi + theta) / (2 * theta) * na - 0.5
    ri = np.clip(ri[None] - drift_rows[:, None, None], 0, nd - 1.001)
    cj = np.clip(cj[None] - drift_cols[:, None, None], 0, na - 1.001)
    i0, j0 = np.floor(ri).astype(np.intp), np.floor(cj).astype(np.intp)
    wi, wj = ri - i0, cj - j0
    flat = polar.reshape(-1)
    idx = (np.arange(T)[:, None, None] * nd + i0) * na + j0  # (T, S, S) into the flattened polar frames
    top_row = flat[idx] * (1 - wj) + flat[idx + 1] * wj
    bottom_row = flat[idx + na] * (1 - wj) + flat[idx + na + 1] * wj
    return top_row * (1 - wi) + bottom_row * wi, mask


def synth_video(label: str, n_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic convex-probe lung-ultrasound clip of class ``label``.

    Args:
        label: one of :data:`CLASSES` (``covid``: B-lines; ``pneumonia``: consolidation; ``regular``: A-lines).
        n_frames: number of frames T (at least 1).
        size: frame side S in pixels (at least 32); the look is tuned at 128.
        rng: the only source of randomness; the same generator state gives the same clip, byte for byte.

    Returns:
        uint8 array (T, S, S): grey frames, black outside the fan-shaped sector.
    """
    if label not in CLASSES:
        raise ValueError(f"unknown class {label!r}: expected one of {', '.join(CLASSES)}")
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    T, S = int(n_frames), int(size)
    sc = S / 128.0
    nd = na = S  # polar grid: depth rows x beam columns
    rows = np.arange(nd, dtype=np.float32)[:, None]
    s = _strength(rng)

    # --- geometry of the sector ------------------------------------------------------------------------------
    top = rng.uniform(1.0, 4.0) * sc
    r0 = rng.uniform(0.3, 0.55) * S  # convex probe radius
    depth = rng.uniform(0.82, 0.95) * (S - 1 - top)
    r1 = r0 + depth
    theta = min(0.75, rng.uniform(0.82, 0.97) * math.asin(min(0.98, (S / 2 - 1) / r1)))
    cy = top - r0  # the apex, above the frame

    # --- sliding (lung layer, per frame) and probe drift (everything, per frame) ------------------------------
    slide_amp = rng.uniform(3.0, 8.0) * sc * (rng.uniform(0.3, 1.0) if label == "covid" else 1.0)
    t = np.arange(T, dtype=np.float32)
    slide = slide_amp * np.sin(2 * np.pi * t / rng.uniform(12, 30) + rng.uniform(0, 2 * np.pi))
    pad = int(np.ceil(8.0 * sc)) + 3
    W = na + 2 * pad  # width of the lung layer, which slides under the fixed chest wall
    ramp = t / max(T - 1, 1)
    drift_rows = rng.uniform(-1.5, 1.5) * sc * ramp + 0.4 * sc * np.sin(2 * np.pi * t / rng.uniform(8, 20))
    drift_cols = rng.uniform(-3.0, 3.0) * sc * ramp + 0.6 * sc * np.sin(2 * np.pi * t / rng.uniform(8, 20))

    # --- pleura -----------------------------------------------------------------------------------------------
    ip0 = rng.uniform(0.18, 0.34) * nd
    x = (np.arange(W, dtype=np.float32) - W / 2) / (W / 2)
    ip = ip0 + rng.uniform(-3, 3) * sc * x**2 + rng.uniform(0.3, 1.0) * sc * _noise1d(rng, W, 12 * sc)
    sig_p = rng.uniform(0.7, 1.1) * sc
    p_amp = rng.uniform(0.7, 1.1)
    p_tex = 1.0 + 0.35 * _noise1d(rng, W, 2.5 * sc)  # texture that slides with the lung
    ip_smooth = ip.astype(np.float32)  # the reverberations (A-lines) repeat the smooth chest-wall distance
    if label == "covid":  # thickened, irregular, fragmented
        ip = ip + rng.uniform(0.4, 1.6) * sc * s * _noise1d(rng, W, 2.5 * sc)
        sig_p *= 1 + rng.uniform(0.3, 1.2) * s
        p_tex = 0.45 + 0.55 * np.clip(_noise1d(rng, W, 3 * sc) + 1.0 - s, 0, 1.2)
    ip = ip.astype(np.float32)
    dz = rows - ip[None, :]  # (nd, W) rows below the pleura, in lung coordinates

    # --- class signs ------------------------------------------------------------------------------------------
    if label == "regular":
        a_amp = rng.uniform(0.1, 0.25) if rng.random() < 0.15 else rng.uniform(0.3, 0.75)
        n_b = 1 if rng.random() < 0.2 else 0
        b_amps = rng.uniform(0.15, 0.35, n_b)
        consolidation = None
    elif label == "covid":
        a_amp = rng.uniform(0.1, 0.4) if rng.random() < 0.3 else 0.0
        n_b = int(rng.integers(1, 6))
        b_amps = s * rng.uniform(0.7, 1.3, n_b)
        consolidation = (rng.uniform(0.08, 0.16), rng.uniform(0.05, 0.12), s) if rng.random() < 0.25 else None
    else:
        a_amp = rng.uniform(0.1, 0.55) if rng.random() < 0.6 else 0.0
        n_b = int(rng.integers(0, 3))
        b_amps = s * rng.uniform(0.3, 0.8, n_b)
        consolidation = (rng.uniform(0.35, 0.8) * (0.5 + 0.5 * s), rng.uniform(0.25, 0.6) * (0.4 + 0.6 * s), s)

    # consolidation: lateral envelope w (W,), depth h (W,)
    u = np.arange(W, dtype=np.float32)
    w_c = np.zeros(W, np.float32)
    h_c = np.zeros(W, np.float32)
    bronch = np.zeros((nd, W), np.float32)
    if consolidation is not None:
        frac_w, frac_h, cs = consolidation
        wc = frac_w * na
        uc = rng.uniform(pad + 0.5 * wc, pad + na - 0.5 * wc)
        v = np.clip((u - (uc - wc / 2)) / wc, 0, 1)
        w_c = np.clip(np.sin(np.pi * v), 0, 1).astype(np.float32)
        hmax = frac_h * (nd - ip0)
        jag = _noise1d(rng, W, 1.5 * sc) * 0.2 + _noise1d(rng, W, 6 * sc) * 0.2
        h_c = (hmax * np.clip(w_c * (1 + jag), 0, None) ** 0.6).astype(np.float32)
        if frac_w > 0.17:  # big enough for air bronchograms
            impulses = _bronchograms(rng, (nd, W), ip, uc - wc / 2, uc + wc / 2, h_c)
            bronch = _blur(impulses, 0.7 * sc, 1.6 * sc) * (2 * np.pi * 0.7 * 1.6 * sc * sc) * cs

    # B-lines: lateral profile (W,)
    b_pos = rng.uniform(pad + 0.05 * na, pad + 0.95 * na, n_b)
    b_sig = rng.uniform(1.2, 3.0, n_b) * sc
    if label == "covid" and rng.random() < 0.35:  # coalescent B-lines ("white lung" band)
        b_sig[0] = rng.uniform(6.0, 12.0) * sc
    b_lat = np.zeros(W, np.float32)
    for pos, sig, amp in zip(b_pos, b_sig, b_amps, strict=True):
        b_lat += amp * np.exp(-0.5 * ((u - pos) / sig) ** 2)
    b_vert = _sstep(dz + 0.5, 0.7) * np.exp(-np.clip(dz, 0, None) / (rng.uniform(1.5, 5.0) * nd))
    b_vert = b_vert * (0.85 + 0.15 * _noise(rng, (nd, 1), 3 * sc, 0))

    # --- lung layer (nd, W), slides -----------------------------------------------------------------------------
    below = _sstep(dz, 0.8)
    air = rng.uniform(0.05, 0.13) * below * np.exp(-np.clip(dz, 0, None) / (0.6 * nd))
    air = air * (1 + 0.4 * _noise(rng, (nd, W), 2 * sc, 6 * sc))
    lung = air + p_amp * (1 - 0.5 * w_c) * p_tex * np.exp(-0.5 * (dz / sig_p) ** 2)
    if a_amp > 0:
        decay = rng.uniform(0.45, 0.75)
        a_tex = np.clip(1 + 0.3 * _noise1d(rng, W, 10 * sc), 0.2, None) * np.clip(1 - 1.5 * b_lat, 0, 1) * (1 - w_c)
        for k in range(2, 12):
            if k * ip0 > nd + 3:
                break
            sig_k = sig_p * (1 + 0.25 * k)
            lung = lung + a_amp * decay ** (k - 2) * a_tex * np.exp(-0.5 * ((rows - k * ip_smooth) / sig_k) ** 2)
    if consolidation is not None:
        in_c = _sstep(dz - 1.0, 0.6) * _sstep(h_c[None, :] - dz, 0.8) * (w_c > 0.02)
        c_level = rng.uniform(0.16, 0.32) * (0.6 + 0.4 * consolidation[2])
        tissue_c = c_level * (1 + 0.2 * _noise(rng, (nd, W), 1.5 * sc, 4 * sc))
        border = np.clip(_noise1d(rng, W, 2 * sc) + 0.5, 0, None) * (w_c > 0.05)
        shred = 0.6 * consolidation[2] * border * np.exp(-0.5 * ((dz - h_c) / (1.2 * sc)) ** 2)
        lung = lung * (1 - in_c) + (tissue_c + bronch) * in_c + shred
    lung = lung + b_lat[None, :] * b_vert

    # --- chest-wall layer (nd, na), fixed ----------------------------------------------------------------------------
    j = np.arange(na, dtype=np.float32)
    ip_fixed = ip[pad : pad + na]
    wall = rng.uniform(0.12, 0.26) * (1 + 0.3 * _noise(rng, (nd, na), 1.5 * sc, 25 * sc))
    for _ in range(int(rng.integers(1, 4))):  # fasciae: thin bright tilted lines
        row = rng.uniform(0.15, 0.8) * ip0 + rng.uniform(-3, 3) * sc * (j - na / 2) / na
        lat = np.clip(1 + 0.5 * _noise1d(rng, na, 15 * sc), 0, None)
        wall = wall + rng.uniform(0.2, 0.6) * lat * np.exp(-0.5 * ((rows - row) / (0.8 * sc)) ** 2)
    wall = wall + 0.3 * np.exp(-rows / (1.5 * sc))  # probe interface
    wall = wall * (1 - _sstep(rows - ip_fixed[None, :] + 1.5 * sig_p, 0.8))
    shadow = np.ones((nd, na), np.float32)
    if rng.random() < 0.45:  # a rib: bright curved surface and acoustic shadow
        wr = rng.uniform(0.07, 0.13) * na
        ur = rng.uniform(0.0, 0.15) * na
        ur = ur if rng.random() < 0.5 else na - 1 - ur
        rr = ip0 * rng.uniform(0.8, 1.0) + 2 * sc * ((j - ur) / wr) ** 2
        lat = _sstep(wr - np.abs(j - ur), 1.0)
        wall = wall + 0.9 * lat * np.exp(-0.5 * ((rows - rr) / (1.0 * sc)) ** 2)
        shadow = 1 - 0.93 * lat * _sstep(rows - rr - 1.5 * sc, 0.8)

    # --- speckle: persistent (sliding in the lung) + fresh per frame ------------------------------------------
    lung_mask = _sstep(rows - ip_fixed[None, :] + 1.5 * sig_p, 0.8)  # (nd, na)
    amp = _speckle(rng, T, nd, na, pad, slide, lung_mask, sc)

    # --- compose in polar coordinates -------------------------------------------------------------------------------
    echo = (wall[None] + _shift_cols(lung.astype(np.float32), pad, na, slide)) * shadow[None]
    tgc = 1 + rng.uniform(-0.25, 0.25) * (rows / nd - 0.5)
    gain = rng.uniform(0.75, 1.3)
    polar = np.clip(gain * echo * amp * tgc[None], 0, None) ** rng.uniform(0.55, 0.75) * 0.8

    # --- scan conversion to the square frame, electronic noise -------------------------------------------------
    img, mask = _scan_convert(polar, S, r0, depth, theta, cy, drift_rows, drift_cols)
    img = img + rng.uniform(0.005, 0.05) * rng.standard_normal((T, S, S), dtype=np.float32)
    img = img * mask[None]
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# the sample set on disk


def _readme(videos_per_class: int, n_frames: int, size: int, seed: int, videos_per_patient: int) -> str:
    """Text of the README.md written next to the frames."""
    return (
        "# Synthetic lung-ultrasound sample set\n\n"
        "Generated, not recorded: convex-probe lung-ultrasound clips drawn by `hico.data.synth`, to try the HiCo\n"
        "workbench without patient data. Classes: `covid` (B-lines), `pneumonia` (consolidation with air\n"
        "bronchograms) and `regular` (A-lines), all with lung sliding, speckle and probe drift.\n\n"
        f"- {len(CLASSES)} classes x {videos_per_class} videos x {n_frames} frames, {size} x {size} px grey JPEG,\n"
        f"  frame folders `<class>/<video_id>/<n>.jpg` (n from 0, not zero-padded);\n"
        f"- `index.csv`: one row per frame, columns `{','.join(_INDEX_COLUMNS)}`; `split_group` is a synthetic\n"
        f"  patient id grouping {videos_per_patient} consecutive videos of a class;\n"
        f"- generated with `hico data synth --out data_samples` (seed {seed}); the same seed gives the same frames.\n\n"
        "Licence: generated data, CC0 1.0 (public domain dedication).\n"
    )


def write_dataset(
    out: str | Path,
    videos_per_class: int = 12,
    n_frames: int = 16,
    size: int = 128,
    seed: int = 0,
    videos_per_patient: int = 2,
    progress: bool = True,
    *,
    overwrite: bool = False,
) -> Path:
    """Generate the synthetic set and write it as frame folders with an ``index.csv`` and a ``README.md``.

    Layout: ``out/<class>/<class>_vNN/<n>.jpg`` (n = 0 .. n_frames - 1, not zero-padded; JPEG quality 90) and
    ``out/index.csv`` with columns ``file,video_id,class,split_group``, one row per frame (``file`` relative to
    ``out``; ``split_group`` like ``covid_p01`` groups ``videos_per_patient`` consecutive videos of one class).
    Video ``i`` of class ``c`` is drawn with ``np.random.default_rng([seed, CLASSES.index(c), i])``.

    The set is written into ``out.tmp-<pid>`` and renamed into place at the end.

    Args:
        out: target folder; it must not exist or be empty, unless ``overwrite`` is true (then it is replaced).
        videos_per_class: videos per class.
        n_frames: frames per video.
        size: frame side in pixels.
        seed: base seed.
        videos_per_patient: videos per synthetic patient (``split_group``).
        progress: show a tqdm progress bar over videos.
        overwrite: replace a non-empty ``out``.

    Returns:
        The path of the written folder.

    Raises:
        ValueError: ``out`` exists and is not an empty folder (without ``overwrite``), or a bad count.
    """
    out = Path(out)
    if videos_per_class < 1 or n_frames < 1 or videos_per_patient < 1:
        raise ValueError("videos_per_class, n_frames and videos_per_patient must be at least 1")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise ValueError(
                f"{out} exists and is not empty: choose another folder, or replace it (--overwrite, overwrite=True)"
            )
    jobs = [(ci, c, i) for ci, c in enumerate(CLASSES) for i in range(videos_per_class)]
    width = max(2, len(str(videos_per_class - 1)))
    pwidth = max(2, len(str((videos_per_class - 1) // videos_per_patient)))
    rows: list[tuple[str, str, str, str]] = []
    with atomic_dir(out) as tmp:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="synth videos", unit="video")
        for ci, c, i in jobs:
            video_id = f"{c}_v{i:0{width}d}"
            group = f"{c}_p{i // videos_per_patient:0{pwidth}d}"
            frames = synth_video(c, n_frames, size, np.random.default_rng([seed, ci, i]))
            vdir = tmp / c / video_id
            vdir.mkdir(parents=True)
            for n, frame in enumerate(frames):
                Image.fromarray(frame).save(vdir / f"{n}.jpg", quality=_JPEG_QUALITY)
                rows.append((f"{c}/{video_id}/{n}.jpg", video_id, c, group))
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        with open(tmp / "index.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(_INDEX_COLUMNS)
            writer.writerows(rows)
        (tmp / "README.md").write_text(_readme(videos_per_class, n_frames, size, seed, videos_per_patient))
    return out


def _frame_number(path: Path) -> int:
    """The frame number in a name like ``12.jpg`` (names without digits sort first)."""
    m = re.search(r"(\d+)", path.stem)
    return int(m.group(1)) if m else -1


def preview(root: str | Path, out_png: str | Path, per_class: int = 4, frames: tuple[int, ...] = (0, 5, 10)) -> None:
    """Draw a grid of sample frames of a frame-folder set (as written by :func:`write_dataset`) into a PNG.

    One row per class (labelled with its name); in each row ``per_class`` videos, each shown as the frames
    ``frames`` side by side (frame numbers that a video lacks are skipped). Tiles keep the frames' size.

    Args:
        root: folder with ``<class>/<video>/<n>.jpg``.
        out_png: the picture to write (its folder is created).
        per_class: videos shown per class (the first ones, in name order).
        frames: frame numbers shown per video.

    Raises:
        ValueError: no class folder with frames under ``root``.
    """
    root = Path(root)
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    grid: list[tuple[str, list[list[Image.Image]]]] = []
    for cdir in classes:
        videos = sorted(p for p in cdir.iterdir() if p.is_dir())[:per_class]
        tiles = []
        for vdir in videos:
            by_number = {_frame_number(f): f for f in vdir.iterdir() if f.suffix.lower() in (".jpg", ".png")}
            tiles.append([Image.open(by_number[n]).convert("L") for n in frames if n in by_number])
        if any(tiles):
            grid.append((cdir.name, tiles))
    if not grid:
        raise ValueError(f"no frame folders under {root}")
    tile = max(im.size[0] for _, vids in grid for v in vids for im in v)
    gap, vgap, label_w, head = 2, 10, 96, 18
    n_cols = max(len(v) for _, vids in grid for v in vids)
    n_vids = max(len(vids) for _, vids in grid)
    width = label_w + n_vids * (n_cols * (tile + gap) - gap) + (n_vids - 1) * vgap + 4
    height = head + len(grid) * (tile + vgap)
    canvas = Image.new("L", (width, height), 24)
    draw = ImageDraw.Draw(canvas)
    try:  # a scalable font where Pillow has FreeType, else its small bitmap font
        big, small = ImageFont.load_default(size=16), ImageFont.load_default(size=11)
    except (ImportError, OSError, TypeError):
        big = small = ImageFont.load_default()
    for v in range(n_vids):
        x0 = label_w + v * (n_cols * (tile + gap) - gap + vgap)
        for k, n in enumerate(frames[:n_cols]):
            draw.text((x0 + k * (tile + gap) + 3, 3), f"frame {n}", fill=170, font=small)
    for row, (name, vids) in enumerate(grid):
        y = head + row * (tile + vgap)
        draw.text((8, y + tile // 2 - 9), name, fill=235, font=big)
        for v, ims in enumerate(vids):
            x0 = label_w + v * (n_cols * (tile + gap) - gap + vgap)
            for k, im in enumerate(ims):
                canvas.paste(im.resize((tile, tile)) if im.size != (tile, tile) else im, (x0 + k * (tile + gap), y))
    atomic_write(out_png, lambda f: canvas.save(f, format="PNG", optimize=True), mode="wb")
