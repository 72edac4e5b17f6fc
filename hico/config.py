"""Methods as configurations: one YAML file per method, loaded into typed, validated dataclasses.

A method file (``hico/configs/NAME.yaml``) has up to five sections, ``model`` (:class:`ModelConfig`), ``loss``
(:class:`LossConfig`), ``data`` (:class:`DataConfig`), ``augment`` (:class:`AugmentConfig`) and ``train``
(:class:`~hico.train.config.TrainConfig`), plus a ``description``. ``extends: OTHER`` starts from another
method and overrides what the file names, so an ablation row is a few lines. A key that does not exist is an
error naming the key and its file.

Example::

    >>> cfg = load_method("hico", ["loss.lam=0.3", "model.init=random"])
    >>> cfg.loss.lam
    0.3
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hico.data.augment import AugmentConfig
from hico.methods import KINDS as LOSS_KINDS
from hico.methods import method_class
from hico.models.config import ModelConfig
from hico.train.config import TrainConfig

PAIR_SAMPLERS = ("hico", "uscl", "ivpp", "ucl")


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message names the key and the file."""


@dataclass
class LossConfig:
    """The training objective; ``kind`` names the method (:mod:`hico.methods`). ``kind="hico"``:
    :class:`~hico.losses.HiCoLoss` with every argument below; ``kind="uscl"``: :class:`~hico.losses.USCLLoss`
    (NT-Xent + ``lam`` * (CE1 + CE2); alpha, beta, terms, cross_pairing and smoothing unused); ``kind="moco"``:
    :class:`~hico.losses.MoCoLoss` (a momentum key encoder and a queue of ``queue_size`` negatives; temperature
    and momentum used, the rest unused); ``kind="byol"``: :mod:`hico.methods.byol` (a predictor and a momentum
    target network of tau = ``momentum``; the rest unused)."""

    kind: str = "hico"
    lam: float = 0.5
    alpha: float = 0.2
    beta: float = 0.2
    temperature: float = 0.5
    terms: tuple[str, ...] = ("local", "medium", "global", "global_local", "global_medium", "soft_ce")
    cross_pairing: str = "cross_view"
    smoothing: str = "normalized"
    queue_size: int = 4096
    momentum: float = 0.999
    support_size: int = 0  # moco: UCL's cross-video hard negative mixed from this many nearest queued keys
    soft_nn_temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss.kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        self.terms = (self.terms,) if isinstance(self.terms, str) else tuple(self.terms)
        self.build()  # the loss validates its own arguments: fail at load time, not mid-run

    def build(self, dim: int = 128):
        """The loss module this configuration describes (``dim``: the embedding size, for the MoCo queue)."""
        from hico.methods import build_loss

        return build_loss(self, dim)


@dataclass
class DataConfig:
    """Where the videos are and how pairs are drawn: the sampler, the cached working size, the fraction of
    videos whose labels the loss may use (the rest are unlabelled, label -1)."""

    path: str | None = None
    pairs: str = "hico"
    working_size: int = 256
    label_rate: float = 0.0
    pair_seconds: float = 1.0  # ivpp: the two frames of a pair are at most this far apart ...
    fps: float = 30.0  # ... counted in frames at this rate (frame folders carry no frame rate)
    negatives: int = 3  # ucl: intra-video hard negatives per anchor ...
    positive_window: int = 3  # ... the positive at most this many frames from the anchor ...
    negative_window: tuple[float, float] = (0.2, 0.4)  # ... the negatives this far, as fractions of the video ...
    shrink_epoch: int = 30  # ... a window that shrinks from this epoch on ...
    shrink_epochs: int = 30  # ... to nothing (but never into the positive window) over this many epochs

    def __post_init__(self) -> None:
        if self.pairs not in PAIR_SAMPLERS:
            raise ValueError(f"data.pairs must be one of {PAIR_SAMPLERS}, got {self.pairs!r}")
        if not 0 <= self.label_rate <= 1:
            raise ValueError(f"data.label_rate must be in [0, 1], got {self.label_rate}")
        if not (self.pair_seconds > 0 and self.fps > 0):
            raise ValueError(f"data.pair_seconds and data.fps must be > 0, got {self.pair_seconds} and {self.fps}")
        self.negative_window = tuple(self.negative_window)
        if self.pairs == "ucl":
            self.sampler()  # the sampler validates its own settings: fail at load time

    def sampler(self):
        """The pair sampler this configuration names (ivpp: D = max(1, round(pair_seconds * fps)) frames)."""
        from hico.data.pairs import make_sampler

        if self.pairs == "ivpp":
            return make_sampler("ivpp", max_distance=max(1, round(self.pair_seconds * self.fps)))
        if self.pairs == "ucl":
            return make_sampler(
                "ucl",
                negatives=self.negatives,
                positive_window=self.positive_window,
                window=tuple(self.negative_window),
                shrink_epoch=self.shrink_epoch,
                shrink_epochs=self.shrink_epochs,
            )
        return make_sampler(self.pairs)


@dataclass
class MethodConfig:
    """A whole method: model, loss, pairs and augmentation."""

    name: str = "hico"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain, fully resolved dict (what a run directory's ``config.yaml`` holds)."""
        return _plain(dataclasses.asdict(self))


SECTIONS = {
    "model": ModelConfig,
    "loss": LossConfig,
    "data": DataConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
}


def config_dir() -> Path:
    """The folder of the named method files shipped with the package."""
    return Path(str(resources.files("hico") / "configs"))


def method_names() -> list[str]:
    """Names of every shipped method configuration (file stems of ``hico/configs/*.yaml``)."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def method_from_dict(raw: dict, source: str = "config") -> MethodConfig:
    """Rebuild a :class:`MethodConfig` from :meth:`MethodConfig.to_dict` output (a run's config.yaml)."""
    return _build(dict(raw), source)


def load_method(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> MethodConfig:
    """Load a named method or a YAML file, apply ``key.sub=value`` overrides, validate every section.

    Raises:
        ConfigError: unknown method, unreadable file, unknown key, bad value (one line, naming key and file).
    """
    raw, source = _resolve(str(name_or_path), seen=())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. loss.lam=0.3")
        _set(raw, key.strip().split("."), yaml.safe_load(value), f"override {item!r}")
    raw.setdefault("name", Path(str(name_or_path)).stem)
    return _build(raw, source)


def _resolve(name: str, seen: tuple[str, ...]) -> tuple[dict, str]:
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = config_dir() / f"{name}.yaml"
        if not path.exists():
            close = difflib.get_close_matches(name, method_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown method {name!r}{hint}: give a YAML file or one of {', '.join(method_names())}")
    if str(path) in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw, str(path)
    base, _ = _resolve(str(parent), (*seen, str(path)))
    base.pop("description", None)
    base.pop("name", None)
    return _merge(base, raw), str(path)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set(raw: dict, keys: list[str], value: Any, where: str) -> None:
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {k!r} is not a section")
    node[keys[-1]] = value


def _build(raw: dict, source: str) -> MethodConfig:
    known = {"name", "description", *SECTIONS}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{source}: unknown section {key!r}{_hint(key, known)}; sections: {', '.join(sorted(known))}"
            )
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping")
        fields = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in fields:
                raise ConfigError(
                    f"{source}: unknown key {name}.{key}{_hint(key, fields)}; {name} keys: {', '.join(fields)}"
                )
        try:
            sections[name] = cls(**values)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {name}: {e}") from e
    cfg = MethodConfig(name=str(raw.get("name", "")), description=str(raw.get("description", "")).strip(), **sections)
    _check_consistency(cfg, source)
    return cfg


def _check_consistency(cfg: MethodConfig, source: str) -> None:
    """Checks that span sections: what the loss needs, the model must produce."""
    m, method = cfg.model, method_class(cfg.loss.kind)
    if m.pooling == "flatten" and m.image_size != cfg.augment.size:
        raise ConfigError(
            f"{source}: model.image_size ({m.image_size}) must equal augment.size ({cfg.augment.size}) "
            "with model.pooling: flatten"
        )
    try:
        method.check(cfg)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from e
    if cfg.data.pairs == "ucl" and not method.takes_negatives:
        raise ConfigError(f"{source}: data.pairs: ucl gives hard negatives that only loss.kind: moco uses")
    if method.labels_needed(cfg.loss) and m.num_classes == 0:
        raise ConfigError(f"{source}: the loss uses labels but model.num_classes is 0: set it to the number of classes")


def _hint(key: str, choices) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
