"""Batched, per-sample augmentation of grey ultrasound frames on the training device.

The authors' (USCL / HiCo) view augmentation, applied per frame::

    RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.8, 1.25))   # bilinear, no antialias
    RandomHorizontalFlip(0.5)
    ColorJitter(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
    grey -> 3 channels, Normalize(mean=0.5, std=0.25)

``torchvision.transforms.v2`` applied to a batch tensor draws ONE set of random parameters for the whole
batch, which is wrong for contrastive learning (every view of a batch would share its crop). Here every
sample gets its own parameters, and the whole batch is processed with a handful of batched tensor ops (no
Python loop over samples), on CPU or CUDA.

Crop + resize is a separable bilinear resample: for each sample, the output's source rows and columns are
computed exactly as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` computes them
*inside the crop* (clamped to the crop's edges), then two gathers and two lerps produce all crops at once.
It reproduces ``torchvision.transforms.v2.functional.resized_crop(..., antialias=False)`` to float32
rounding (max abs difference 1.2e-7 on [0, 1] noise images). ``torchvision.ops.roi_align(aligned=True,
sampling_ratio=1)`` and ``F.grid_sample`` with per-sample affine grids agree in the interior (~3e-5) but
blend in the pixels just *outside* the crop along its edges when a side is upsampled (max 0.03 for 256 ->
224 px, 0.3 for 128 -> 224 px, on noise images); ``sampling_ratio=2`` averages 2x2 points per output pixel
(a different filter, max 0.36). The horizontal flip is folded into the column indices (free).

Example::

    aug = BatchAugment(size=224)                        # the authors' defaults, see AugmentConfig
    gen = make_generator(0, frames.device)              # frames: (B, 256, 256) uint8 on the training device
    views = aug(frames, generator=gen)                  # (B, 3, 224, 224) float32, normalised
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from hico.checks import check_int, check_number

__all__ = ["AugmentConfig", "AugmentParams", "BatchAugment", "frames_to_input", "make_generator"]

_TRIES = 10  # candidate boxes per sample, as torchvision's RandomResizedCrop
# Columns of the one (B, _NCOLS) uniform draw per call (a fixed layout keeps seeds reproducible).
_AREA = slice(0, _TRIES)
_LOGR = slice(_TRIES, 2 * _TRIES)
_TOP, _LEFT, _FLIP, _JIT = 2 * _TRIES, 2 * _TRIES + 1, 2 * _TRIES + 2, 2 * _TRIES + 3
_FACT = slice(2 * _TRIES + 4, 2 * _TRIES + 7)  # brightness, contrast, saturation factors
_ORDER = slice(2 * _TRIES + 7, 2 * _TRIES + 10)  # sort keys -> per-sample order of the three jitter ops
_NCOLS = 2 * _TRIES + 10


@dataclass
class AugmentConfig:
    """Parameters of :class:`BatchAugment`; the defaults are the USCL / HiCo ones.

    size: output side in pixels (square output).
    scale: range of the crop's area as a fraction of the frame's area, ``0 < lo <= hi <= 1``.
    ratio: range of the crop's aspect ratio (width / height), sampled log-uniformly, ``0 < lo <= hi``.
    flip_p: probability of a horizontal flip.
    brightness, contrast, saturation: jitter strengths v >= 0; factors ~ U[max(0, 1 - v), 1 + v].
    hue: jitter strength in [0, 0.5]; an exact identity on grey frames, so it is never applied (see
        :class:`BatchAugment`). Kept so configs can state the authors' full recipe.
    jitter_p: probability that a sample gets the colour jitter at all (1.0 = always, as the authors).
    mean, std: normalisation ``(x - mean) / std`` of the [0, 1] intensities, std > 0.
    """

    size: int = 224
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.8, 1.25)
    flip_p: float = 0.5
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    jitter_p: float = 1.0
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self) -> None:
        check_int("size", self.size, 1)
        self.scale = _pair("scale", self.scale)
        self.ratio = _pair("ratio", self.ratio)
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must be 0 < lo <= hi <= 1, got {self.scale}")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ValueError(f"ratio must be 0 < lo <= hi, got {self.ratio}")
        for name in ("flip_p", "jitter_p"):
            v = check_number(name, getattr(self, name))
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        for name in ("brightness", "contrast", "saturation"):
            if check_number(name, getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= check_number("hue", self.hue) <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        check_number("mean", self.mean)
        if not check_number("std", self.std) > 0:
            raise ValueError(f"std must be > 0, got {self.std}")


def _pair(name: str, v: object) -> tuple[float, float]:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise ValueError(f"{name} must be a pair (lo, hi), got {v!r}")
    return (check_number(name, v[0]), check_number(name, v[1]))


class AugmentParams(NamedTuple):
    """Per-sample augmentation parameters, all tensors on the frames' device, B = batch size.

    top, left, height, width: (B,) int64, the crop box in input pixels (as ``resized_crop``'s arguments).
    flip: (B,) bool, horizontal flip of the output.
    brightness, contrast, saturation: (B,) float32 factors; 1.0 is an exact identity (samples without
        jitter carry 1.0).
    order: (B, 3) int64, a permutation of (0 = brightness, 1 = contrast, 2 = saturation): the order in
        which the sample's jitter ops are applied (torchvision's ColorJitter draws a random order too).
    """

    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    flip: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    order: Tensor

    @classmethod
    def identity(cls, batch: int, height: int, width: int, device: torch.device | str = "cpu") -> AugmentParams:
        """Whole-frame crop, no flip, no jitter: only the resize (and normalisation) remain."""

        def full(v, dtype=torch.long):  # a separate tensor per field: callers may edit them in place
            return torch.full((batch,), v, dtype=dtype, device=device)

        order = torch.arange(3, device=device).repeat(batch, 1)
        one = torch.float32
        return cls(
            full(0),
            full(0),
            full(height),
            full(width),
            full(False, torch.bool),
            full(1.0, one),
            full(1.0, one),
            full(1.0, one),
            order,
        )


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``, for :meth:`BatchAugment.forward`."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


class BatchAugment(torch.nn.Module):
    """Per-sample RandomResizedCrop + HorizontalFlip + ColorJitter + grey->RGB + Normalize, batched.

    ``BatchAugment(cfg=None, **overrides)``: ``cfg`` defaults to :class:`AugmentConfig` (), and keyword
    overrides replace its fields (validated again), e.g. ``BatchAugment(size=112, flip_p=0.0)``.

    ``forward(frames, generator=None, *, memory_format=None) -> (B, 3, size, size) float32``

    - ``frames``: (B, H, W) or (B, 1, H, W) grey, or (B, 3, H, W); uint8 in [0, 255] or floating in
      [0, 1]. Any H, W (not necessarily square).
    - ``generator``: a ``torch.Generator`` on the SAME device type as ``frames`` (``make_generator(seed,
      frames.device)``), or None for torch's default generator of that device. All randomness of a call
      is one ``torch.rand((B, 30), generator=generator, device=frames.device)``, so a seed fixes the
      output on a given device (CPU and CUDA streams differ).
    - ``memory_format``: None (default) returns grey input as a stride-0 ``expand`` to 3 channels (no
      copy: call ``.contiguous()`` before writing into it in place); ``torch.contiguous_format`` or
      ``torch.channels_last`` returns a materialised tensor in that layout.

    Per-sample parameters, as torchvision draws them for one image:

    - crop: area fraction ~ U(scale), aspect ratio log-uniform in ratio, ``w = round(sqrt(A * r))``,
      ``h = round(sqrt(A / r))``; the first of 10 candidates that fits is taken (10 are drawn at once per
      sample), else the centre-crop fallback of ``RandomResizedCrop``; top/left uniform over the integer
      positions. Then a bilinear resize (align_corners=False, no antialias) to ``size``.
    - flip with probability ``flip_p``.
    - with probability ``jitter_p``: brightness ``x * b`` and contrast ``(x - m) * c + m`` where ``m`` is
      the mean of the sample's grey image (torchvision's ``adjust_contrast``: ``c * x + (1 - c) * m``),
      each clamped to [0, 1], in a random per-sample order (without the clamps the two commute; with
      them they do not, hence the order is kept). Saturation and hue are exact identities on a grey
      image (zero saturation, undefined hue; torchvision returns 1-channel images unchanged), so they are
      skipped for 1-channel input. For 3-channel input, saturation (blend with the 0.2989/0.587/0.114
      grayscale, clamped) joins the random order; hue is NOT implemented (a warning says so once when
      ``hue > 0``): this workbench only sees grey ultrasound.
    - grey -> 3 channels, then ``(x - mean) / std``.

    Differences from the authors' PIL pipeline: intensities stay float32 between the ops (PIL rounds to
    uint8 after each), and the resize never antialiases (torchvision ``antialias=False``; PIL's bilinear
    filter widens when it shrinks, here by at most ~1.15x for 256 px frames to 224 px).
    Float input is assumed in [0, 1] and is not clamped. :meth:`apply_params` skips the jitter ops whose
    strength in the config is 0 (and all of them when ``jitter_p == 0``), whatever the params say.
    Not differentiable (runs under ``torch.no_grad``).
    """

    def __init__(self, cfg: AugmentConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else AugmentConfig()
        if overrides:
            fields = {f.name for f in dataclasses.fields(AugmentConfig)}
            unknown = sorted(set(overrides) - fields)
            if unknown:
                raise ValueError(f"unknown AugmentConfig field(s) {unknown}; valid: {sorted(fields)}")
            cfg = dataclasses.replace(cfg, **overrides)
        self.cfg = cfg
        self._warned_hue = False

    def extra_repr(self) -> str:
        return repr(self.cfg)

    # ---------------------------------------------------------------- parameters
    def sample_params(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> AugmentParams:
        """Draw per-sample parameters for ``batch`` frames of ``height`` x ``width`` pixels on ``device``."""
        cfg = self.cfg
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"generator is on {generator.device} but the frames are on {device}: "
                f"use make_generator(seed, frames.device)"
            )
        u = torch.rand((batch, _NCOLS), generator=generator, device=device)

        # RandomResizedCrop.make_params, 10 candidates per sample at once.
        area = float(height * width)
        s_lo, s_hi = cfg.scale
        lr_lo, lr_hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
        target = area * (s_lo + (s_hi - s_lo) * u[:, _AREA])
        aspect = torch.exp(lr_lo + (lr_hi - lr_lo) * u[:, _LOGR])
        w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round()
        h = torch.round(torch.sqrt(target / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting candidate
        found = ok.any(dim=1)
        w = w.gather(1, first).squeeze(1).long()
        h = h.gather(1, first).squeeze(1).long()
        top = (u[:, _TOP] * (height - h + 1)).long().clamp_(max=height - h)  # randint(0, height - h + 1)
        left = (u[:, _LEFT] * (width - w + 1)).long().clamp_(max=width - w)
        # Fallback: central crop of the closest admissible aspect ratio.
        fw, fh = _fallback_size(height, width, cfg.ratio)
        w = torch.where(found, w, fw)
        h = torch.where(found, h, fh)
        top = torch.where(found, top, (height - fh) // 2)
        left = torch.where(found, left, (width - fw) // 2)

        flip = u[:, _FLIP] < cfg.flip_p
        jitter = (u[:, _JIT] < cfg.jitter_p).unsqueeze(1)
        # factor ~ U[max(0, 1 - v), 1 + v] per jitter, from Python numbers (no host-to-device copy per batch)
        strengths = (cfg.brightness, cfg.contrast, cfg.saturation)
        lows = [max(0.0, 1.0 - v) for v in strengths]
        factors = torch.stack(
            [lo + (1.0 + v - lo) * u[:, _FACT][:, i] for i, (lo, v) in enumerate(zip(lows, strengths, strict=True))], 1
        )
        factors = torch.where(jitter, factors, torch.ones_like(factors))
        order = u[:, _ORDER].argsort(dim=1)
        return AugmentParams(top, left, h, w, flip, factors[:, 0], factors[:, 1], factors[:, 2], order)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        frames: Tensor,
        generator: torch.Generator | None = None,
        *,
        memory_format: torch.memory_format | None = None,
    ) -> Tensor:
        """Augment ``frames`` (B, H, W) / (B, C, H, W) into (B, 3, size, size) float32 normalised views."""
        x = _as_bchw(frames)
        params = self.sample_params(x.shape[0], x.shape[2], x.shape[3], x.device, generator)
        return self.apply_params(x, params, memory_format=memory_format)

    @torch.no_grad()
    def apply_params(
        self, frames: Tensor, params: AugmentParams, *, memory_format: torch.memory_format | None = None
    ) -> Tensor:
        """Augment ``frames`` with the given per-sample ``params`` (see :meth:`sample_params`).

        Deterministic; exposed to test against torchvision with chosen parameters.
        """
        cfg = self.cfg
        x = _as_bchw(frames)
        b, c = x.shape[:2]
        img = _resized_crop(x, params, cfg.size)  # (B, C, S, S) float32 in [0, 1]

        ops = []
        if cfg.brightness > 0:
            ops.append((0, _brightness, params.brightness))
        if cfg.contrast > 0:
            ops.append((1, _contrast, params.contrast))
        if c == 3 and cfg.saturation > 0:
            ops.append((2, _saturation, params.saturation))
        if c == 3 and cfg.hue > 0 and not self._warned_hue:
            warnings.warn("BatchAugment: hue jitter is not implemented; skipped", stacklevel=2)
            self._warned_hue = True
        if cfg.jitter_p > 0 and ops:
            img = _jitter(img, ops, params.order)

        img = img.sub_(cfg.mean).div_(cfg.std)
        if c == 1:
            img = img.expand(b, 3, cfg.size, cfg.size)
        if memory_format is not None:
            img = img.contiguous(memory_format=memory_format)
        return img


def frames_to_input(frames: Tensor, cfg: AugmentConfig) -> Tensor:
    """Frames -> model input without augmentation: the whole frame resized to ``cfg.size`` and normalised.

    The one frame-to-input path of evaluation (features, k-NN, fine-tuning's test inputs): the training
    augmentation :class:`BatchAugment` ``(cfg)`` with identity parameters (:meth:`AugmentParams.identity`), so
    the bilinear resampling (no antialias) and ``(x / 255 - cfg.mean) / cfg.std`` are exactly the training
    ones, and evaluation inputs differ from training views only by the random crop, flip and jitter.

    Args:
        frames: (B, H, W) grey (or (B, 1 | 3, H, W)), uint8 in [0, 255] or floating in [0, 1], on any device.
        cfg: the augmentation configuration (its ``size``, ``mean`` and ``std`` are used).

    Returns:
        (B, 3, size, size) float32, contiguous, on the frames' device.
    """
    x = _as_bchw(frames)
    params = AugmentParams.identity(x.shape[0], x.shape[2], x.shape[3], x.device)
    return BatchAugment(cfg).apply_params(x, params, memory_format=torch.contiguous_format)


def _as_bchw(frames: Tensor) -> Tensor:
    if not isinstance(frames, Tensor):
        raise TypeError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames.unsqueeze(1)
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"frames must be (B, H, W), (B, 1, H, W) or (B, 3, H, W), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise TypeError(f"frames must be uint8 or floating, got {frames.dtype}")
    if frames.shape[2] < 1 or frames.shape[3] < 1:
        raise ValueError(f"frames must have H, W >= 1, got {tuple(frames.shape)}")
    return frames


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """Width and height of RandomResizedCrop's central-crop fallback."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        return w, int(round(w / min(ratio)))
    if in_ratio > max(ratio):
        h = height
        return int(round(h * max(ratio))), h
    return width, height


def _source_index(start: Tensor, length: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear source taps of ``size`` outputs from crops [start, start + length): (B, size) each.

    As PyTorch's upsample_bilinear2d (align_corners=False) computes them: ``scale = length / size`` in
    float32, ``src = scale * (i + 0.5) - 0.5`` rounded once (the kernel's fused multiply-add: the float64
    product of two float32 numbers is exact), clamped to >= 0; taps i0 = floor(src), i1 = min(i0 + 1,
    length - 1) relative to the crop, so the crop's edge pixels are replicated, never its neighbours.
    """
    scale = length.to(torch.float32) / size
    i = torch.arange(size, device=start.device, dtype=torch.float64) + 0.5
    src = (scale.to(torch.float64)[:, None] * i - 0.5).to(torch.float32).clamp_(min=0)
    i0 = src.floor()
    lam = src - i0
    i0 = i0.long()
    i1 = torch.minimum(i0 + 1, (length - 1)[:, None])
    i0 = torch.minimum(i0, (length - 1)[:, None])
    return i0 + start[:, None], i1 + start[:, None], lam


def _resized_crop(x: Tensor, p: AugmentParams, size: int) -> Tensor:
    """(B, C, H, W) uint8/float -> (B, C, size, size) float32 in [0, 1]: per-sample crop, resize, flip."""
    b, c, hgt, wid = x.shape
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).mul_(1.0 / 255)  # as torchvision's to_dtype(..., scale=True)
    else:
        x = x.to(torch.float32)
    y0, y1, ly = _source_index(p.top, p.height, size)
    x0, x1, lx = _source_index(p.left, p.width, size)
    # A horizontal flip of the output is the reversed column taps.
    flip = p.flip[:, None]
    x0 = torch.where(flip, x0.flip(1), x0)
    x1 = torch.where(flip, x1.flip(1), x1)
    lx = torch.where(flip, lx.flip(1), lx)
    if c > 1:  # fold channels into the batch: every channel shares its sample's taps
        x = x.reshape(b * c, 1, hgt, wid)
        y0, y1, ly, x0, x1, lx = (t.repeat_interleave(c, dim=0) for t in (y0, y1, ly, x0, x1, lx))
    n = x.shape[0]  # N = B * C
    flat = x.reshape(n * hgt, wid)
    base = (torch.arange(n, device=x.device) * hgt)[:, None]

    def take_rows(idx: Tensor) -> Tensor:  # (N, S, W); index_select copies whole rows (faster than x[i, j])
        return flat.index_select(0, (base + idx).flatten()).view(n, size, wid)

    # Rows: (N, S, W). torch.lerp differs from the interpolate kernel's (1 - w) * a + w * b by an ulp.
    r = torch.lerp(take_rows(y0), take_rows(y1), ly[:, :, None])
    # Columns: gather along the last dim, (N, S, S).
    lx = lx[:, None, :]
    idx0 = x0[:, None, :].expand(n, size, size)
    idx1 = x1[:, None, :].expand(n, size, size)
    out = torch.lerp(torch.gather(r, 2, idx0), torch.gather(r, 2, idx1), lx)
    return out.view(b, c, size, size)


def _col(f: Tensor) -> Tensor:
    return f.view(-1, 1, 1, 1)


def _brightness(img: Tensor, f: Tensor) -> Tensor:
    return img.mul_(_col(f)).clamp_(0, 1)


def _grey(img: Tensor) -> Tensor:
    """(B, 1, H, W) grey of a (B, C, H, W) image, torchvision's weights for C = 3."""
    if img.shape[1] == 1:
        return img
    r, g, b = img.unbind(1)
    return (r * 0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _contrast(img: Tensor, f: Tensor) -> Tensor:
    mean = _grey(img).mean(dim=(1, 2, 3))
    return img.mul_(_col(f)).add_(_col(mean * (1 - f))).clamp_(0, 1)


def _saturation(img: Tensor, f: Tensor) -> Tensor:
    grey = _grey(img) * _col(1 - f)  # before img changes in place
    return img.mul_(_col(f)).add_(grey).clamp_(0, 1)


def _jitter(img: Tensor, ops: list, order: Tensor) -> Tensor:
    """Apply the jitter ops in each sample's own ``order``; a factor of 1 is an exact identity.

    Slot k applies every op once, with its real factor only in the samples whose k-th op it is (identity
    elsewhere): len(ops)^2 elementwise passes for per-sample orders without indexing. For the grey case
    (brightness, contrast) the schedule brightness -> contrast -> brightness suffices (3 passes).
    """
    one = torch.ones((), device=img.device)
    rank = order.argsort(dim=1)  # rank[:, k] = position of op k in the sample's order
    if [k for k, _, _ in ops] == [0, 1]:
        b_first = rank[:, 0] < rank[:, 1]
        _, bright, fb = ops[0]
        _, contrast, fc = ops[1]
        img = bright(img, torch.where(b_first, fb, one))
        img = contrast(img, fc)
        return bright(img, torch.where(b_first, one, fb))
    ids = [k for k, _, _ in ops]
    # The relative order of the active ops: position among them (0 .. len(ops) - 1).
    rel = torch.stack([(rank[:, ids] < rank[:, [k]]).sum(1) for k in ids], dim=1)
    for slot in range(len(ops)):
        for j, (_, fn, f) in enumerate(ops):
            img = fn(img, torch.where(rel[:, j] == slot, f, one))
    return img
