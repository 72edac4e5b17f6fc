"""Methods as configurations: one YAML file per method, loaded into typed, validated dataclasses.

A method file (``hico/configs/NAME.yaml``) has up to five sections, ``model`` (:class:`ModelConfig`), ``loss``
(:class:`LossConfig`), ``data`` (:class:`DataConfig`), ``augment`` (:class:`AugmentConfig`) and ``train``
(:class:`TrainConfig`), plus a ``description``. ``extends: OTHER`` starts from another
method and overrides what the file names, so an ablation row is a few lines. A key that does not exist is an
error naming the key and its file.

Values are read by the type each field declares, in one place (:func:`typed_value`): YAML 1.1 reads ``3e-4`` and
``1e9`` as text, so a float field accepts them (and ``1.0e-3``, ``0.5``); an int field accepts a number only when
it is integral (``1e3`` is 1000, ``0.5`` is an error); a bool field accepts only true/false, never a number.

Example::

    >>> cfg = load_method("hico", ["loss.lam=0.3", "model.init=random"])
    >>> cfg.loss.lam
    0.3
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hico.checks import check_int
from hico.data.augment import AugmentConfig
from hico.io import yaml_error
from hico.methods import KINDS as LOSS_KINDS
from hico.methods import method_class
from hico.models.config import ModelConfig

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


PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """How pretraining runs. The defaults reproduce the paper (METHOD.md section 5).

    Attributes:
        epochs: passes over the training videos (paper: 300).
        batch_size: positive pairs per optimizer step, over all processes (paper: 32).
        lr, weight_decay: Adam (paper: 3e-4, 1e-4).
        constant_epochs: epochs at constant lr before the cosine decay to 0 (authors' code: 10).
        pairs_per_video: pairs drawn from each training video per epoch.
        workers: data-loader worker processes; -1 = auto (0 on CPU, where frames come from the cache in
            microseconds and augmentation runs in the main process, up to 8 on CUDA).
        device: ``auto`` (CUDA, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``bf16`` or ``fp32``.
        compile: ``torch.compile`` the model (checkpoints always hold the uncompiled weights).
        channels_last: NHWC memory format (auto: on CUDA).
        sync_bn: SyncBatchNorm under several CUDA processes, so that BatchNorm sees the global batch. ``auto``: on,
            except with ``compile``, where every SyncBatchNorm layer breaks the compiled graph (27 breaks in
            ResNet-18 + FPN, each a return to Python): then BatchNorm uses each GPU's own batch, which is what to
            use with compile. ``true`` forces it (with compile: a warning), ``false`` turns it off.
        seed: seeds model init, splits, labelled subset, pairs and augmentations.
        log_every: write a step record to metrics.jsonl every this many steps.
        holdout: fraction of videos (grouped by patient) held out for the k-NN monitor and best.pt.
        knn_every: epochs between k-NN evaluations, which also run before training and at the last epoch (0 = never).
        knn_frames_per_video: frames per video in the k-NN feature bank and queries.
        knn_k: neighbours of the k-NN classifier.
        max_steps: stop after this many optimizer steps in total (0 = no limit; for benchmarks and tests).
        checkpoint_every: also write last.pt every this many steps (0 = at the end of every epoch only).
        epoch_checkpoints: keep the backbone + FPN weights of epoch 0 (before training), of powers of two and of
            the last epoch in ``checkpoints/epoch_NNNN.pt`` (as ``backbone.pt``; about 53 MB each at ResNet-18
            + FPN), whether or not k-NN runs or videos are held out.
    """

    epochs: int = 300
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    constant_epochs: int = 10
    pairs_per_video: int = 1
    workers: int = -1
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    channels_last: str | bool = "auto"
    sync_bn: str | bool = "auto"
    seed: int = 0
    log_every: int = 10
    holdout: float = 0.2
    knn_every: int = 1
    knn_frames_per_video: int = 4
    knn_k: int = 10
    max_steps: int = 0
    checkpoint_every: int = 0
    epoch_checkpoints: bool = True

    def __post_init__(self) -> None:
        for name, low in (
            ("epochs", 1),
            ("batch_size", 2),
            ("pairs_per_video", 1),
            ("log_every", 1),
            ("knn_frames_per_video", 1),
            ("knn_k", 1),
        ):
            check_int(f"train.{name}", getattr(self, name), low)
        for name in ("constant_epochs", "knn_every", "max_steps", "checkpoint_every"):
            check_int(f"train.{name}", getattr(self, name), 0)
        if not (isinstance(self.workers, int) and self.workers >= -1):
            raise ValueError(f"train.workers must be -1 (auto) or >= 0, got {self.workers!r}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"train.holdout must be in [0, 1), got {self.holdout}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not isinstance(self.epoch_checkpoints, bool):
            raise ValueError(f"train.epoch_checkpoints must be true or false, got {self.epoch_checkpoints!r}")
        if self.channels_last not in ("auto", True, False):
            raise ValueError(f"train.channels_last must be auto, true or false, got {self.channels_last!r}")
        if self.sync_bn not in ("auto", True, False):
            raise ValueError(f"train.sync_bn must be auto, true or false, got {self.sync_bn!r}")


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


ABLATION_PREFIX = "hico-ablation-"
"""Shipped configurations named so are rows of the paper's ablation tables, not methods of their own."""


def method_names(ablation: bool | None = None) -> list[str]:
    """Names of the shipped method configurations (file stems of ``hico/configs/*.yaml``): all of them, or only the
    rows of the paper's ablation tables (``ablation=True``), or only the methods (``ablation=False``)."""
    names = sorted(p.stem for p in config_dir().glob("*.yaml"))
    return names if ablation is None else [n for n in names if n.startswith(ABLATION_PREFIX) == ablation]


def method_from_dict(raw: dict, source: str = "config") -> MethodConfig:
    """Rebuild a :class:`MethodConfig` from :meth:`MethodConfig.to_dict` output (a run's config.yaml)."""
    return _build(dict(raw), source, {})


def load_method(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> MethodConfig:
    """Load a named method or a YAML file, apply ``key.sub=value`` overrides, validate every section.

    An override's value is read as YAML, then as the field's type (:func:`typed_value`); an error in it names
    the override as ``--set KEY=VALUE`` (what the command line calls it), an error in a file names the file.

    Raises:
        ConfigError: unknown method, unreadable file, unknown key, bad value (one line, naming key and file).
    """
    raw, source, origins = _resolve(str(name_or_path), seen=())
    before = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: an override must look like section.key=value, e.g. loss.lam=0.3")
        keys = key.strip().split(".")
        where = f"--set {item}"
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value  # e.g. "[p2, p3" : let the field's type say what it expected
        _set(raw, keys, parsed, where)
        origins[tuple(keys)] = (where, value)
    raw.setdefault("name", Path(str(name_or_path)).stem)
    return _build(raw, source, origins, before)


def _resolve(name: str, seen: tuple[str, ...]) -> tuple[dict, str, dict]:
    """The merged raw mapping of a method file and its ``extends`` chain, the file's path, and for every
    ``(section, key)`` the file that set it last (``{key: (where, None)}``, see :func:`_build`); ``seen``: the
    files that extend it, innermost last (they name it in the errors)."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = config_dir() / f"{name}.yaml"
        if not path.exists():
            close = difflib.get_close_matches(name, method_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            what = f"{seen[-1]}: extends {name!r}, which is not a YAML file nor a method" if seen else None
            raise ConfigError(
                f"{what or f'unknown method {name!r}'}{hint}: give a YAML file or one of {', '.join(method_names())}"
            )
    if str(path) in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({yaml_error(e)})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    mine = {(sec, k): (f"{path}: {sec}.{k}", None) for sec, v in raw.items() if isinstance(v, dict) for k in v}
    if parent is None:
        return raw, str(path), mine
    base, _, origins = _resolve(str(parent), (*seen, str(path)))
    base.pop("description", None)
    base.pop("name", None)
    return _merge(base, raw), str(path), {**origins, **mine}


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


def typed_value(cls: type, key: str, value: Any, text: str | None = None) -> Any:
    """``value`` (as YAML read it) converted to the type that field ``key`` of dataclass ``cls`` declares.

    int: an int, or a number or numeric text that is integral (``1e3`` -> 1000); float: a number or numeric
    text (``3e-4``, ``1e9``, which YAML 1.1 reads as text), finite; bool: only true/false; str: text (``text``,
    the characters as typed on the command line, when YAML read them as something else, e.g. ``2024``);
    ``X | None``: None too; ``tuple[T, ...]``: a list of T (a single text for a tuple of texts).

    Raises:
        ValueError: "expected <kind> (<type>), got <value>"; the caller adds where the value came from.
    """
    return _coerce(typing.get_type_hints(cls)[key], value, text)


def _coerce(tp: Any, value: Any, text: str | None) -> Any:
    got = repr(text) if text is not None else repr(value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:  # the value as it is, if one member takes it (str | bool: "auto" or true)
            if arg is not type(None) and typing.get_origin(arg) is not typing.Literal and _is(arg, value):
                return value
        for arg in args:
            if arg is not type(None):
                try:
                    return _coerce(arg, value, text)
                except ValueError:
                    pass
        raise ValueError(f"expected {_kind(tp)}, got {got}")
    if origin is typing.Literal:
        if isinstance(value, str) and value in args:
            return value
        raise ValueError(f"expected {_kind(tp)}, got {got}")
    if origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis
        if variadic and args[0] is str and isinstance(value, str):
            return value  # one term: terms: global
        items = args[:1] * len(value) if variadic and isinstance(value, (list, tuple)) else args
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ValueError(f"expected {_kind(tp)}, got {got}")
        try:
            return tuple(_coerce(a, v, None) for a, v in zip(items, value, strict=True))
        except ValueError:
            raise ValueError(f"expected {_kind(tp)}, got {got}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int or tp is float:
        number = _number(value)
        if number is not None and tp is float:
            return number
        if number is not None and isinstance(value, int) and not isinstance(value, bool):
            return value
        if number is not None and number.is_integer():
            return int(number)
    elif tp is str:
        if isinstance(value, str):
            return value
        if text is not None:
            return text
    else:
        return value
    raise ValueError(f"expected {_kind(tp)}, got {got}")


def _is(tp: Any, value: Any) -> bool:
    return isinstance(value, bool) if tp is bool else isinstance(value, tp) and not isinstance(value, bool)


def _number(value: Any) -> float | None:
    """A finite float from a number or numeric text; None for anything else (bool, nan, 'abc')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value) if abs(value) < 1e308 else math.inf
    elif isinstance(value, str):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return None
    else:
        return None
    return number if math.isfinite(number) else None


_KINDS = {bool: "true or false (bool)", int: "an integer (int)", float: "a number (float)", str: "text (str)"}
_PLURALS = {bool: "true/false values (bool)", int: "integers (int)", float: "numbers (float)", str: "texts (str)"}


def _kind(tp: Any) -> str:
    """How an error message names a type: "a number (float)", "a list of 2 numbers (float)", ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _kind(a) for a in args)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURALS[args[0]]}"
        return f"a list of {len(args)} {_PLURALS[args[0]]}"
    return _KINDS.get(tp, getattr(tp, "__name__", str(tp)))


def _build(raw: dict, source: str, origins: dict | None = None, before: dict | None = None) -> MethodConfig:
    """Build a :class:`MethodConfig` from a merged raw mapping. ``origins[(section, key)] = (where, text)``
    says where a value came from (``"FILE: section.key"`` or ``"--set KEY=VALUE"`` and the text typed after
    ``=``); ``before``: the mapping before the overrides, to tell which override made a section invalid."""
    origins = origins or {}
    known = {"name", "description", *SECTIONS}
    for key in raw:
        if key not in known:
            where = next((w for (s, *_), (w, t) in origins.items() if s == key and t is not None), source)
            raise ConfigError(
                f"{where}: unknown section {key!r}{_hint(key, known)}; sections: {', '.join(sorted(known))}"
            )
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {name!r} must be a mapping")
        typed = _typed(cls, name, values, source, origins)
        try:
            sections[name] = cls(**typed)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{_blame(cls, name, source, origins, before, values)}: {e}") from e
    cfg = MethodConfig(name=str(raw.get("name", "")), description=str(raw.get("description", "")).strip(), **sections)
    _check_consistency(cfg, source)
    return cfg


def _typed(cls: type, name: str, values: dict, source: str, origins: dict) -> dict:
    """The section's values, every key checked to exist and converted to its field's type."""
    fields = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in values.items():
        where, text = origins.get((name, key), (f"{source}: {name}.{key}", None))
        if key not in fields:
            at = where if text is not None else source
            raise ConfigError(f"{at}: unknown key {name}.{key}{_hint(key, fields)}; {name} keys: {', '.join(fields)}")
        try:
            out[key] = typed_value(cls, key, value, text)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return out


def _blame(cls: type, name: str, source: str, origins: dict, before: dict | None, values: dict) -> str:
    """Who made a section invalid: the overrides each of which, set back to the file's value, makes it valid;
    else all of the section's overrides when the file's own values are valid; else the file."""
    file_values = (before or {}).get(name) or {}
    culprits = []
    for key in values:
        where, text = origins.get((name, key), (None, None))
        if text is None:
            continue  # from the file
        trial = {k: v for k, v in values.items() if k != key}
        if key in file_values:
            trial[key] = file_values[key]
        try:
            cls(**_typed(cls, name, trial, source, origins))
        except (TypeError, ValueError):
            continue
        culprits.append(where)
    if not culprits:  # several overrides together, or the file itself
        sets = [origins[(name, k)][0] for k in values if origins.get((name, k), (0, None))[1] is not None]
        try:
            cls(**_typed(cls, name, dict(file_values), source, {}))
            culprits = sets
        except (TypeError, ValueError):
            pass
    return "; ".join(culprits) or f"{source}: {name}"


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


def uses_labels(cfg: MethodConfig) -> bool:
    """True when the method's loss reads class labels (USCL's CE, HiCo's softened CE) at a label rate above 0
    (the method's own rule: :meth:`hico.methods.base.Method.uses_labels`)."""
    return method_class(cfg.loss.kind).uses_labels(cfg)


def resolve_classes(cfg: MethodConfig, classes: list[str], source: str = "the data") -> MethodConfig:
    """``cfg`` with ``model.num_classes`` set to ``len(classes)`` where it is auto (None); unchanged otherwise.

    Raises:
        ConfigError: an explicit ``model.num_classes`` differs from the number of classes while the loss uses
            labels (one line, naming both and how to fix it).
    """
    k = len(classes)
    given = cfg.model.num_classes
    if given is None:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=k))
    if uses_labels(cfg) and given != k:
        raise ConfigError(
            f"model.num_classes is {given} but {source} has {k} classes ({', '.join(classes)}): "
            f"pass --set model.num_classes={k}, or model.num_classes=auto to take it from the data"
        )
    return cfg


def _hint(key: str, choices) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
