"""HiCoNet: output keys/shapes per configuration, gradients, init, backbone export, parameter counts."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.misc import FrozenBatchNorm2d

from hico.models import (
    CheckpointMismatchError,
    HiCoNet,
    ModelConfig,
    PyramidNeck,
    WeightsUnavailableError,
    count_parameters,
    export_backbone,
    load_backbone,
)
from hico.models.backbone import imagenet_cache_path
from hico.models.hiconet import map_size

SMALL = 64  # px: keeps every test but the batch-32 one fast on a 2-core CPU

AUTHORS = {  # the authors' code, at a small fixed image size
    "levels": ("p2", "p3", "p5"),
    "pooling": "flatten",
    "image_size": SMALL,
    "fpn_norm": False,
    "fpn_upsample": "bilinear",
    "fpn_smooth_top": False,
    "head_layers": 2,
    "classifier": "code",
}
SIMCLR = {"fpn": False, "head_layers": 2, "hidden_dim": 512, "num_classes": 0}
USCL = {"fpn": False, "head_layers": 2, "hidden_dim": 512}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def images(n: int = 2, size: int = SMALL) -> torch.Tensor:
    return torch.randn(n, 3, size, size)


def shapes(out: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in out.items() if k != "maps"}


# ---- outputs -------------------------------------------------------------------------------------------


def test_default_config_outputs() -> None:
    model = HiCoNet()
    assert model.config == ModelConfig()
    out = model(images(3))
    assert shapes(out) == {"local": (3, 256), "medium": (3, 256), "global": (3, 256), "logits": (3, 3)}
    assert model.sources == {"local": "p2", "medium": "p4", "global": "p5"}
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 256
    torch.testing.assert_close(out["logits"], model.classifier(out["global"]))
    assert "maps" not in out


def test_authors_config_outputs() -> None:
    model = HiCoNet(ModelConfig(**AUTHORS))
    out = model(images(2))
    assert shapes(out) == {"local": (2, 256), "medium": (2, 256), "global": (2, 256), "logits": (2, 3)}
    assert model.sources == {"local": "p2", "medium": "p3", "global": "p5"}
    local = model.heads["local"].mlp  # flatten: Linear(256*16*16 -> 256) -> ReLU -> Linear(256 -> 256)
    assert [type(m) for m in local] == [nn.Linear, nn.ReLU, nn.Linear]
    assert local[0].in_features == 256 * 16 * 16 and local[2].out_features == 256
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.fpn.modules())
    assert isinstance(model.fpn.layer_blocks[3], nn.Identity)  # P5 not smoothed
    assert isinstance(model.fpn.layer_blocks[2], nn.Identity)  # P4 feeds no head
    with pytest.raises(ValueError, match="image_size"):
        model(images(2, SMALL + 32))


def test_simclr_config_outputs() -> None:
    model = HiCoNet(ModelConfig(**SIMCLR))
    out = model(images(2), return_maps=True)
    assert shapes(out) == {"global": (2, 256)}  # no local/medium without FPN, no logits with num_classes=0
    assert model.fpn is None and model.classifier is None
    assert sorted(out["maps"]) == ["c2", "c3", "c4", "c5"]


def test_uscl_head() -> None:
    model = HiCoNet(ModelConfig(**USCL))
    head = model.heads["global"].mlp
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (512, 512, 256)
    assert (model.classifier.in_features, model.classifier.out_features) == (256, 3)  # CE on the 256-d z
    out = model(images(2))
    assert shapes(out) == {"global": (2, 256), "logits": (2, 3)}
    torch.testing.assert_close(out["logits"], model.classifier(out["global"]))


@pytest.mark.parametrize("size", [64, 96, 100])
def test_return_maps_strides_and_channels(size: int) -> None:
    out = HiCoNet()(images(2, size), return_maps=True)
    maps = out["maps"]
    for k in (2, 3, 4, 5):
        side = -(-size // 2**k)  # ceil: ResNet rounds odd sides up
        assert maps[f"p{k}"].shape == (2, 256, side, side)
        assert maps[f"c{k}"].shape == (2, [64, 128, 256, 512][k - 2], side, side)
        assert map_size(size, 2**k) == side


def test_pyramid_starts_at_finest_used_level() -> None:
    model = HiCoNet(ModelConfig(levels=("p3", "p4", "p5")))
    maps = model(images(2), return_maps=True)["maps"]
    assert [k for k in maps if k.startswith("p")] == ["p3", "p4", "p5"]
    assert len(model.fpn.inner_blocks) == 3


def test_flatten_head_at_size_not_multiple_of_32() -> None:
    model = HiCoNet(ModelConfig(pooling="flatten", image_size=100))
    assert shapes(model(images(2, 100)))["local"] == (2, 256)


def test_no_classifier_with_zero_classes() -> None:
    assert "logits" not in HiCoNet(ModelConfig(num_classes=0))(images(2))


# ---- FPN ----------------------------------------------------------------------------------------------


def test_fpn_default_matches_torchvision() -> None:
    """With nearest upsampling our forward is torchvision's FeaturePyramidNetwork.forward."""
    neck = PyramidNeck({"c2": 64, "c3": 128, "c4": 256, "c5": 512}, norm=True, smoothed=("p2", "p4", "p5"))
    channels = {2: 64, 3: 128, 4: 256, 5: 512}
    feats = {f"c{k}": torch.randn(2, c, 32 // 2**k, 32 // 2**k) for k, c in channels.items()}
    ours = neck(feats)
    reference = FeaturePyramidNetwork.forward(neck, feats)
    for (name, a), b in zip(ours.items(), reference.values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_fpn_norm_relu() -> None:
    neck = HiCoNet().fpn
    for block in [*neck.inner_blocks, *(b for b in neck.layer_blocks if not isinstance(b, nn.Identity))]:
        assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert block[0].bias is None
    plain = HiCoNet(ModelConfig(fpn_norm=False)).fpn
    assert all([type(m) for m in block] == [nn.Conv2d] for block in plain.inner_blocks)


# ---- gradients ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, AUTHORS, SIMCLR, USCL, {"levels": ("p3", "p4", "p5"), "head_layers": 3}, {"classifier": "code"}],
    ids=["default", "authors", "simclr", "uscl", "p345-3layers", "code-classifier"],
)
def test_every_parameter_gets_a_gradient(overrides: dict) -> None:
    model = HiCoNet(ModelConfig(**overrides)).train()
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    out = model(images(4))
    sum(v.square().mean() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("classifier", ["linear", "code"])
def test_outputs_computes_only_what_is_asked(classifier: str) -> None:
    torch.manual_seed(0)
    model = HiCoNet(ModelConfig(classifier=classifier)).eval()
    x = images(2)
    full = model(x)
    assert model.output_names == ("local", "medium", "global", "logits") == tuple(full)
    only = model(x, outputs=("logits", "local"))
    assert sorted(only) == ["local", "logits"]  # the linear classifier reads "global" but it is not returned
    for key, value in only.items():
        torch.testing.assert_close(value, full[key])
    sum(v.square().mean() for v in only.values()).backward()
    no_grad = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.grad is None}
    expected = {"heads.medium"} | ({"heads.global"} if classifier == "code" else set())
    assert {n for n in no_grad if n.startswith("heads.")} == expected
    assert not any(n.startswith(("backbone.", "classifier.")) for n in no_grad)
    with pytest.raises(ValueError, match="no output"):
        HiCoNet(ModelConfig(**SIMCLR))(x, outputs=("local",))


def test_channels_last() -> None:
    model = HiCoNet().eval()
    x = images(2)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.to(memory_format=torch.channels_last), return_maps=True)
    assert got["maps"]["p2"].is_contiguous(memory_format=torch.channels_last)
    for key in ("local", "medium", "global", "logits"):
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=1e-4)


# ---- init ---------------------------------------------------------------------------------------------


def test_imagenet_offline_raises_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        HiCoNet(ModelConfig(init="imagenet"))
    message = str(info.value)
    assert isinstance(info.value, RuntimeError) and "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "init='random'" in message and "download" in message
    assert calls == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]  # it did try torchvision


def test_imagenet_weights_from_hub_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)  # the cache must be used
    reference = torchvision.models.resnet18(weights=None)
    os.makedirs(os.path.dirname(imagenet_cache_path()))
    torch.save(reference.state_dict(), imagenet_cache_path())
    model = HiCoNet(ModelConfig(init="imagenet"))
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(model.backbone.bn1.running_var, reference.bn1.running_var)


def test_missing_checkpoint_names_the_path(tmp_path) -> None:
    path = str(tmp_path / "nope" / "backbone.pt")
    with pytest.raises(FileNotFoundError, match="nope/backbone.pt"):
        HiCoNet(ModelConfig(init=path))


# ---- backbone export ----------------------------------------------------------------------------------


def _trained(model: HiCoNet) -> HiCoNet:
    """Move BN running statistics away from their initial values, as training would."""
    model.train()
    with torch.no_grad():
        model(images(4))
    return model.eval()


def test_export_backbone_roundtrip(tmp_path) -> None:
    model = _trained(HiCoNet(ModelConfig(num_classes=4)))
    path = tmp_path / "out" / "backbone.pt"
    model.export_backbone(path)
    assert os.listdir(path.parent) == ["backbone.pt"]  # atomic: no .tmp left behind

    saved = torch.load(path, weights_only=True)
    assert saved["format"] == "hico-backbone" and saved["config"]["num_classes"] == 4
    assert saved["state_dict"].keys() == model.backbone_state_dict().keys()
    assert all(k.startswith(("backbone.", "fpn.")) for k in saved["state_dict"])  # no heads, no classifier

    x = images(2)
    expected = model(x, return_maps=True)["maps"]
    for fresh in (load_backbone(path), HiCoNet(ModelConfig(num_classes=4, init=str(path)))):
        got = fresh.eval()(x, return_maps=True)["maps"]
        assert got.keys() == expected.keys()
        for name in expected:
            assert torch.equal(got[name], expected[name]), name
        assert not torch.equal(fresh.heads["local"].mlp[0].weight, model.heads["local"].mlp[0].weight)


def test_export_overwrites_atomically(tmp_path) -> None:
    path = tmp_path / "backbone.pt"
    path.write_bytes(b"old")
    export_backbone(HiCoNet(ModelConfig(fpn=False)), path)
    assert torch.load(path, weights_only=True)["format"] == "hico-backbone"
    assert sorted(os.listdir(tmp_path)) == ["backbone.pt"]


def test_load_from_training_checkpoint(tmp_path) -> None:
    model = _trained(HiCoNet())
    wrapped = {"module." + k: v for k, v in model.state_dict().items()}  # as saved from DDP
    path = tmp_path / "ckpt.pt"
    torch.save({"model": wrapped, "epoch": 3, "optimizer": {}}, path)
    fresh = HiCoNet(ModelConfig(init=str(path))).eval()
    x = images(2)
    torch.testing.assert_close(fresh(x, return_maps=True)["maps"]["p2"], model(x, return_maps=True)["maps"]["p2"])


def test_resnet_only_model_from_hico_backbone(tmp_path) -> None:
    model = _trained(HiCoNet())
    model.export_backbone(tmp_path / "b.pt")
    plain = HiCoNet(ModelConfig(fpn=False, init=str(tmp_path / "b.pt"))).eval()
    x = images(2)
    assert torch.equal(plain(x, return_maps=True)["maps"]["c5"], model(x, return_maps=True)["maps"]["c5"])


def test_init_from_torchvision_resnet_file(tmp_path) -> None:
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = HiCoNet(ModelConfig(init=str(tmp_path / "resnet18.pth")))  # FPN stays randomly initialised
    torch.testing.assert_close(model.backbone.layer3[0].downsample[0].weight, reference.layer3[0].downsample[0].weight)


def test_mismatched_checkpoint_lists_keys(tmp_path) -> None:
    HiCoNet(ModelConfig(fpn_norm=False)).export_backbone(tmp_path / "plain.pt")
    with pytest.raises(CheckpointMismatchError, match=r"fpn\.inner_blocks\.0\.1\.weight"):
        HiCoNet(ModelConfig(fpn_norm=True, init=str(tmp_path / "plain.pt")))


# ---- parameter counts ---------------------------------------------------------------------------------


def test_parameter_counts() -> None:
    reference = torchvision.models.resnet18(weights=None)
    fc = sum(p.numel() for p in reference.fc.parameters())
    assert (sum(p.numel() for p in reference.parameters()), fc) == (11_689_512, 513_000)

    model = HiCoNet()
    counts = count_parameters(model)
    assert counts["backbone"] == 11_689_512 - 513_000 == 11_176_512
    assert (
        counts["total"]
        == sum(p.numel() for p in model.parameters())
        == sum(v for k, v in counts.items() if k != "total")
    )
    assert counts["head_local"] == counts["head_global"] == 256 * 256 + 256
    assert counts["classifier"] == 256 * 3 + 3
    assert count_parameters(ModelConfig()) == counts  # the meta-device count agrees

    simclr = count_parameters(HiCoNet(ModelConfig(**SIMCLR)))
    assert simclr["fpn"] == simclr["head_local"] == simclr["head_medium"] == simclr["classifier"] == 0
    assert simclr["head_global"] == (512 * 512 + 512) + (512 * 256 + 256)


def test_flatten_head_parameter_formula() -> None:
    def flatten_head(side: int) -> int:  # Linear(256*side*side -> 256) -> ReLU -> Linear(256 -> 256)
        return 256 * side * side * 256 + 256 + 256 * 256 + 256

    small = count_parameters(HiCoNet(ModelConfig(**AUTHORS)))  # 64 px: P2 16x16, P3 8x8, P5 2x2
    assert (small["head_local"], small["head_medium"], small["head_global"]) == tuple(
        flatten_head(s) for s in (16, 8, 2)
    )
    full = count_parameters(ModelConfig(**{**AUTHORS, "image_size": 224}))  # meta device: nothing allocated
    assert full["head_local"] - (256 * 256 + 256) == 256 * 56 * 56 * 256 + 256 == 205_521_152


# ---- config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("levels", ("p2", "p4")),
        ("levels", ("p1", "p4", "p5")),
        ("levels", "p2"),
        ("pooling", "max"),
        ("fpn_upsample", "bicubic"),
        ("classifier", "mlp"),
        ("fpn_norm", "yes"),
        ("head_layers", 0),
        ("num_classes", -1),
        ("image_size", 16),
        ("init", ""),
    ],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
        ModelConfig(**{field: value})


def test_config_dict_roundtrip_and_presets() -> None:
    cfg = ModelConfig(levels=["p2", "p3", "p5"])
    assert cfg.levels == ("p2", "p3", "p5")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="'head_dims'.*did you mean 'head_dim'"):
        ModelConfig.from_dict({"head_dims": 128})
    assert ModelConfig.preset("uscl").embeddings == ("global",)
    assert ModelConfig.preset("hico-code").levels == ("p2", "p3", "p5")
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("byol")
