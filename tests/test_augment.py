"""BatchAugment against torchvision.transforms.v2.functional as the independent oracle.

Tolerances: the resample computes the same source taps as PyTorch's bilinear kernel (see
``_source_index``), so float inputs agree to float32 rounding; 1e-5 on [0, 1] intensities leaves room for
the ulp-level difference of ``torch.lerp`` vs the kernel's ``(1 - w) * a + w * b`` and for the division by
``std`` (x4). uint8 oracles round to integers and torchvision's native uint8 kernel uses fixed-point
weights: 1 grey level plus float slack.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from hico.data.augment import AugmentConfig, AugmentParams, BatchAugment, make_generator

TOL = 1e-5  # on [0, 1] intensities, see the module docstring
STATIC = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0)  # resize only


def unnorm(out: torch.Tensor, aug: BatchAugment) -> torch.Tensor:
    return out * aug.cfg.std + aug.cfg.mean


def frames(b: int = 4, h: int = 64, w: int = 64, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """(b, 1, h, w): smooth structure plus noise, so both interpolation and edges matter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, h, w, generator=g) * 0.5
    x += torch.linspace(0, 0.5, w).view(1, 1, 1, w)
    if dtype == torch.uint8:
        return (x * 255).round().to(torch.uint8)
    return x


def with_box(p: AugmentParams, i: int, top: int, left: int, h: int, w: int) -> AugmentParams:
    for name, v in (("top", top), ("left", left), ("height", h), ("width", w)):
        getattr(p, name)[i] = v
    return p


# ----------------------------------------------------------------------------- resample vs torchvision
@pytest.mark.parametrize(("h", "w", "size"), [(64, 64, 48), (32, 32, 56), (40, 72, 50)])
def test_static_config_equals_v2_resize(h, w, size):
    aug = BatchAugment(size=size, **STATIC)
    x = frames(3, h, w)
    if h != w:  # a 1:1 ratio cannot cover a non-square frame: RandomResizedCrop's centre fallback
        side = min(h, w)
        ref = TF.center_crop(x, [side, side])
    else:
        ref = x
    ref = TF.resize(ref, [size, size], interpolation=v2.InterpolationMode.BILINEAR, antialias=False)
    out = aug(x, generator=make_generator(0))
    assert out.shape == (3, 3, size, size) and out.dtype == torch.float32
    torch.testing.assert_close(unnorm(out, aug), ref.expand(-1, 3, -1, -1), atol=TOL, rtol=0)


def test_uint8_input_matches_v2_uint8_resize():
    aug = BatchAugment(size=48, **STATIC)
    x = frames(3, 64, 64, dtype=torch.uint8)
    ref = TF.resize(x, [48, 48], interpolation=v2.InterpolationMode.BILINEAR, antialias=False)
    got = unnorm(aug(x[:, 0]), aug)[:, :1] * 255  # (B, H, W) input
    assert (got - ref.float()).abs().max() <= 1.0 + 1e-3
    # ... and equals the float path exactly (uint8 -> float is torchvision's x * (1 / 255)).
    xf = TF.to_dtype(x, torch.float32, scale=True)
    torch.testing.assert_close(aug(x), aug(xf), atol=0, rtol=0)


def test_fixed_boxes_and_flips_equal_v2_resized_crop():
    size = 40
    aug = BatchAugment(size=size, jitter_p=0.0)
    x = frames(6, 64, 80)
    # Down- and up-sampling crops, touching every border (where clamping at the crop edge matters).
    boxes = [(0, 0, 64, 80), (3, 5, 50, 60), (0, 60, 20, 20), (44, 0, 20, 33), (10, 11, 1, 7), (63, 79, 1, 1)]
    p = AugmentParams.identity(6, 64, 80)
    for i, box in enumerate(boxes):
        with_box(p, i, *box)
    p.flip[1::2] = True
    out = unnorm(aug.apply_params(x, p), aug)
    for i, (t, l, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[i], t, l, h, w, [size, size], antialias=False)
        if i % 2:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref.expand(3, -1, -1), atol=TOL, rtol=0, msg=f"box {i}")


def test_flip_only_equals_v2_horizontal_flip():
    aug = BatchAugment(size=64, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, jitter_p=0.0)
    x = frames(2, 64, 64)
    out = unnorm(aug(x), aug)
    torch.testing.assert_close(out, TF.horizontal_flip(x).expand(-1, 3, -1, -1), atol=TOL, rtol=0)


# ----------------------------------------------------------------------------- colour jitter vs torchvision
def jitter_params(b: int, h: int, w: int, bright, contrast, order) -> AugmentParams:
    p = AugmentParams.identity(b, h, w)
    p.brightness[:] = torch.tensor(bright)
    p.contrast[:] = torch.tensor(contrast)
    p.order[:] = torch.tensor(order)
    return p


@pytest.mark.parametrize("first", ["brightness", "contrast"])
def test_brightness_contrast_equal_v2(first):
    size = 32
    aug = BatchAugment(size=size, flip_p=0.0)
    x = frames(4, size, size) * 0.6 + 0.4  # in [0.4, 1]: brightness > 1 clamps, so the order matters
    bright, contrast = [0.3, 1.8, 1.0, 1.5], [1.7, 0.2, 1.3, 1.0]
    order = [0, 1, 2] if first == "brightness" else [1, 0, 2]
    out = unnorm(aug.apply_params(x, jitter_params(4, size, size, bright, contrast, order)), aug)
    for i in range(4):
        grey, rgb = x[i], x[i].expand(3, -1, -1)
        for img, tol in ((grey, TOL), (rgb, 2e-4)):  # see below for the 3-channel tolerance
            if first == "brightness":
                ref = TF.adjust_contrast(TF.adjust_brightness(img, bright[i]), contrast[i])
            else:
                ref = TF.adjust_brightness(TF.adjust_contrast(img, contrast[i]), bright[i])
            # On 3 channels torchvision's grey mean uses weights 0.2989 + 0.587 + 0.114 = 0.9999: the
            # blend target differs by 1e-4 * mean * |1 - c| <= 1.2e-4 here.
            torch.testing.assert_close(out[i], ref.expand(3, -1, -1), atol=tol, rtol=0)


def test_jitter_order_is_per_sample_and_matters():
    size = 32
    aug = BatchAugment(size=size, flip_p=0.0)
    x = (frames(1, size, size) * 0.6 + 0.4).expand(2, -1, -1, -1)
    p = jitter_params(2, size, size, [1.8, 1.8], [1.5, 1.5], [[0, 1, 2], [1, 0, 2]])
    out = aug.apply_params(x, p)
    assert (out[0] - out[1]).abs().max() > 0.05  # clamping makes brightness and contrast not commute
    # Over many samples both orders occur.
    q = aug.sample_params(400, 8, 8, generator=make_generator(1))
    b_first = q.order.argsort(1)[:, 0] < q.order.argsort(1)[:, 1]
    assert 0.35 < b_first.float().mean() < 0.65


def test_rgb_input_saturation_and_order_equal_v2():
    size = 24
    aug = BatchAugment(size=size, hue=0.0, flip_p=0.0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, size, size, generator=g)
    p = aug.sample_params(6, size, size, generator=make_generator(5))
    p = p._replace(top=p.top * 0, left=p.left * 0, height=p.height * 0 + size, width=p.width * 0 + size)
    out = unnorm(aug.apply_params(x, p), aug)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    facs = (p.brightness, p.contrast, p.saturation)
    for i in range(6):
        ref = x[i]
        for k in p.order[i].tolist():
            ref = ops[k](ref, float(facs[k][i]))
        torch.testing.assert_close(out[i], ref, atol=TOL, rtol=0)
    assert len({tuple(o) for o in p.order.tolist()}) > 1


def test_rgb_hue_is_skipped_with_a_warning():
    aug = BatchAugment(size=8)
    with pytest.warns(UserWarning, match="hue"):
        aug(torch.rand(2, 3, 8, 8))


def test_grey_saturation_and_hue_are_identities_in_torchvision():
    """Why the grey path skips them: torchvision returns a 1-channel image unchanged."""
    x = frames(1, 16, 16)[0]
    assert torch.equal(TF.adjust_saturation(x, 1.7), x)
    assert torch.equal(TF.adjust_hue(x, 0.2), x)


# ----------------------------------------------------------------------------- randomness
def test_identical_frames_get_different_views():
    aug = BatchAugment(size=32)
    x = frames(1, 64, 64, dtype=torch.uint8).expand(8, -1, -1, -1)
    out = aug(x, generator=make_generator(0))
    for i in range(1, 8):
        assert (out[0] - out[i]).abs().max() > 1e-3


def test_seed_reproducibility():
    aug = BatchAugment(size=32)
    x = frames(8, 64, 64, dtype=torch.uint8)
    a = aug(x, generator=make_generator(7))
    b = aug(x, generator=make_generator(7))
    c = aug(x, generator=make_generator(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert aug(x).shape == a.shape  # the default generator works too


def test_sampled_boxes_respect_scale_and_ratio():
    aug = BatchAugment()  # scale (0.8, 1), ratio (0.8, 1.25)
    n, h, w = 20000, 256, 256
    p = aug.sample_params(n, h, w, generator=make_generator(0))
    bh, bw, top, left = (t.double() for t in (p.height, p.width, p.top, p.left))
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    # w = round(sqrt(A r)), h = round(sqrt(A / r)): each side is off by at most 0.5 pixel.
    area_hi = (bw + 0.5) * (bh + 0.5) / (h * w)
    area_lo = (bw - 0.5) * (bh - 0.5) / (h * w)
    assert (area_hi >= 0.8).all() and (area_lo <= 1.0).all()
    assert ((bw + 0.5) / (bh - 0.5) >= 0.8).all() and ((bw - 0.5) / (bh + 0.5) <= 1.25).all()
    frac = bw * bh / (h * w)
    assert frac.min() < 0.81 and frac.max() > 0.99  # the whole range is used
    # top / left are uniform over the admissible positions: mean position ~ half the slack.
    slack = h - bh
    assert abs((top / slack.clamp(min=1))[slack > 0].mean() - 0.5) < 0.02


def test_box_distribution_matches_torchvision_make_params():
    n, side = 3000, 128
    ours = BatchAugment(size=32).sample_params(n, side, side, generator=make_generator(0))
    torch.manual_seed(0)
    rrc = v2.RandomResizedCrop(32, scale=(0.8, 1.0), ratio=(0.8, 1.25))
    img = torch.zeros(1, side, side)
    theirs = [rrc.make_params([img]) for _ in range(n)]
    for key, ours_v in (("height", ours.height), ("width", ours.width)):
        t = torch.tensor([d[key] for d in theirs], dtype=torch.float64)
        o = ours_v.double()
        assert abs(o.mean() - t.mean()) < 0.6, key  # ~4 sigma of the mean (sd ~ 6 px)
        assert abs(o.std() - t.std()) < 0.6, key


def test_fallback_is_torchvision_centre_crop():
    # ratio 2 never fits a 1:1 frame at full area: all 10 tries fail.
    aug = BatchAugment(size=16, scale=(1.0, 1.0), ratio=(2.0, 2.0))
    p = aug.sample_params(5, 64, 64, generator=make_generator(0))
    expect = v2.RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(2.0, 2.0)).make_params([torch.zeros(1, 64, 64)])
    assert expect == dict(top=16, left=0, height=32, width=64)
    for key in expect:
        assert (getattr(p, key) == expect[key]).all(), key


def test_flip_and_jitter_probabilities():
    p = BatchAugment(flip_p=0.3, jitter_p=0.6).sample_params(4000, 32, 32, generator=make_generator(0))
    assert abs(p.flip.float().mean() - 0.3) < 0.04
    jittered = p.brightness != 1
    assert abs(jittered.float().mean() - 0.6) < 0.04
    assert torch.equal(jittered, p.contrast != 1)
    b = p.brightness[jittered]
    assert b.min() >= 0.2 and b.max() <= 1.8 and b.min() < 0.25 and b.max() > 1.75


# ----------------------------------------------------------------------------- shapes, layout, config
def test_shapes_dtypes_and_normalisation():
    aug = BatchAugment(size=24, jitter_p=0.0)
    grey = torch.full((3, 40, 40), 0.5)
    out = aug(grey)
    assert out.shape == (3, 3, 24, 24) and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))
    assert out.stride(1) == 0  # grey -> RGB is an expand, not a copy
    u8 = frames(3, 40, 40, dtype=torch.uint8)
    a = aug(u8, generator=make_generator(1))
    b = aug(u8[:, 0], generator=make_generator(1))  # (B, H, W)
    c = aug(u8.double() / 255, generator=make_generator(1))  # float64 input
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)
    assert -2.0 <= a.min() and a.max() <= 2.0  # (x - 0.5) / 0.25 for x in [0, 1]
    cl = aug(u8, generator=make_generator(1), memory_format=torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, a, atol=0, rtol=0)
    assert aug(torch.zeros(0, 40, 40, dtype=torch.uint8)).shape == (0, 3, 24, 24)


def test_no_grad_and_inference_mode():
    aug = BatchAugment(size=16)
    x = frames(2, 32, 32)
    with torch.no_grad():
        a = aug(x, generator=make_generator(0))
    with torch.inference_mode():
        b = aug(x, generator=make_generator(0))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 0),
        ("size", 12.5),
        ("scale", (0.0, 1.0)),
        ("scale", (0.9, 0.8)),
        ("scale", (0.8, 1.2)),
        ("scale", 0.8),
        ("ratio", (0.0, 1.0)),
        ("ratio", (1.25, 0.8)),
        ("flip_p", 1.5),
        ("jitter_p", -0.1),
        ("brightness", -0.1),
        ("contrast", float("nan")),
        ("saturation", -1),
        ("hue", 0.6),
        ("std", 0.0),
        ("mean", "0.5"),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field} "):
        AugmentConfig(**{field: value})
    with pytest.raises(ValueError, match=rf"^{field} "):
        BatchAugment(**{field: value})


def test_config_overrides_and_lists():
    cfg = AugmentConfig(size=112, scale=[0.5, 1.0])  # lists from YAML become tuples
    assert cfg.scale == (0.5, 1.0)
    aug = BatchAugment(cfg, flip_p=0.0)
    assert aug.cfg.size == 112 and aug.cfg.flip_p == 0.0 and cfg.flip_p == 0.5
    with pytest.raises(ValueError, match="unknown AugmentConfig field"):
        BatchAugment(sise=3)


@pytest.mark.parametrize(
    ("x", "err"),
    [
        (torch.zeros(2, 2, 8, 8), ValueError),
        (torch.zeros(8, 8), ValueError),
        (torch.zeros(2, 8, 8, dtype=torch.int32), TypeError),
    ],
)
def test_invalid_frames(x, err):
    with pytest.raises(err):
        BatchAugment(size=8)(x)


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    aug = BatchAugment(size=56)
    x = frames(16, 64, 64, dtype=torch.uint8)
    xc = x.cuda()
    out = aug(xc, generator=make_generator(0, "cuda"))
    assert out.device.type == "cuda" and out.shape == (16, 3, 56, 56)
    assert torch.equal(out, aug(xc, generator=make_generator(0, "cuda")))
    p = aug.sample_params(16, 64, 64, "cuda", make_generator(0, "cuda"))
    ref = aug.apply_params(x, AugmentParams(*(t.cpu() for t in p)))
    torch.testing.assert_close(out.cpu(), ref, atol=4 * TOL, rtol=0)  # normalised units: x 1 / std
    with pytest.raises(ValueError, match="generator"):
        aug(xc, generator=make_generator(0, "cpu"))
    assert math.isfinite(out.sum().item())
