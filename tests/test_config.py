"""Method configurations: every shipped file loads and builds, ablation rows match the paper's tables."""

from __future__ import annotations

import dataclasses
import itertools
import re
import typing

import pytest
import yaml

from hico.config import SECTIONS, ConfigError, load_method, method_names, typed_value

PAPER_ROWS = {  # Tables 1-3 of the paper: which terms each row switches on
    "hico-ablation-t1-local": {"local"},
    "hico-ablation-t1-medium": {"medium"},
    "hico-ablation-t1-global": {"global"},
    "hico-ablation-t1-local-medium": {"local", "medium"},
    "hico-ablation-t1-local-global": {"local", "global"},
    "hico-ablation-t1-medium-global": {"medium", "global"},
    "hico-ablation-t1-peer": {"local", "medium", "global"},
    "hico-ablation-t2-global-medium": {"global_medium"},
    "hico-ablation-t2-global-local": {"global_local"},
    "hico-ablation-t2-cross": {"global_local", "global_medium"},
    "hico-ablation-t3-local": {"local"},
    "hico-ablation-t3-local-medium": {"local", "medium"},
    "hico-ablation-t3-peer": {"local", "medium", "global"},
    "hico-ablation-t3-peer-global-medium": {"local", "medium", "global", "global_medium"},
    "hico-ablation-t3-contrastive": {"local", "medium", "global", "global_medium", "global_local"},
    "hico-ablation-t3-full": {"local", "medium", "global", "global_medium", "global_local", "soft_ce"},
}


def test_every_named_method_is_shipped():
    names = set(method_names())
    assert {"hico", "hico-code", "simclr", "uscl", "hico-ablation-t1-baseline"} | set(PAPER_ROWS) <= names


@pytest.mark.parametrize("name", method_names())
def test_every_method_loads_and_builds_its_loss(name):
    cfg = load_method(name)
    assert cfg.name == name and cfg.description
    cfg.loss.build()
    yaml.safe_dump(cfg.to_dict())  # serialisable as a run's config.yaml


@pytest.mark.parametrize(("name", "terms"), PAPER_ROWS.items())
def test_ablation_rows_switch_on_the_paper_terms(name, terms):
    cfg = load_method(name)
    assert set(cfg.loss.terms) == terms
    assert cfg.model.fpn and cfg.loss.kind == "hico"
    assert (cfg.data.label_rate > 0) == ("soft_ce" in terms)
    assert (cfg.model.num_classes != 0) == ("soft_ce" in terms)  # None: auto, the number of the data's classes


BASELINE = "hico-ablation-t1-baseline"
TABLES = {  # the rows of the paper's Tables 1-3, in order; row 1 of each is the SimCLR baseline
    1: [BASELINE, *(f"hico-ablation-t1-{r}" for r in ("local", "medium", "global", "local-medium", "local-global"))]
    + ["hico-ablation-t1-medium-global", "hico-ablation-t1-peer"],
    2: [BASELINE, *(f"hico-ablation-t2-{r}" for r in ("global-medium", "global-local", "cross"))],
    3: [BASELINE, *(f"hico-ablation-t3-{r}" for r in ("local", "local-medium", "peer", "peer-global-medium"))]
    + ["hico-ablation-t3-contrastive", "hico-ablation-t3-full"],
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_every_ablation_file_is_a_row_of_a_table_where_its_description_says():
    rows = {name for names in TABLES.values() for name in names}
    assert rows == {n for n in method_names() if n.startswith("hico-ablation-")}
    for table, names in TABLES.items():
        for row, name in enumerate(names, 1):
            text = " ".join(load_method(name).description.split())
            assert f"Table {table}, row {row}" in text or (row == 1 and "Tables 1-3, row 1" in text), name


@pytest.mark.parametrize("table", TABLES)
def test_rows_of_an_ablation_table_differ_only_in_their_loss_terms(table):
    """Fair ablations: every row of a table shares initialisation, head, optimiser, schedule, data, batch and
    epochs, so that a gain between two rows is the loss terms' alone. The resolved configurations of two rows may
    differ only in:
    - loss.terms: what the table varies;
    - model.fpn: only against the baseline, SimCLR on ResNet-18 without FPN (paper, Tables 1-3, row 1);
    - data.label_rate and model.num_classes: only between a row with soft_ce and one without; they are the
      labels and the classifier that soft_ce reads (a label-free row uses no label and builds no classifier).
    name and description are not settings."""
    configs = {name: load_method(name) for name in TABLES[table]}
    flat = {name: _flat(cfg.to_dict()) for name, cfg in configs.items()}
    for a, b in itertools.combinations(TABLES[table], 2):
        differ = {k for k in flat[a] if flat[a][k] != flat[b][k]} - {"name", "description"}
        allowed = {"loss.terms"}
        if BASELINE in (a, b):
            allowed.add("model.fpn")
        if ("soft_ce" in configs[a].loss.terms) != ("soft_ce" in configs[b].loss.terms):
            allowed |= {"data.label_rate", "model.num_classes"}
        assert differ <= allowed, f"{a} vs {b}: {sorted(differ - allowed)} differ"


def test_the_paper_and_code_variants_differ_where_method_md_says():
    paper, code = load_method("hico"), load_method("hico-code")
    assert paper.model.levels == ("p2", "p4", "p5") and code.model.levels == ("p2", "p3", "p5")
    assert (paper.loss.cross_pairing, code.loss.cross_pairing) == ("cross_view", "same_view")
    assert (paper.loss.smoothing, code.loss.smoothing) == ("normalized", "reference")
    assert (paper.model.pooling, code.model.pooling) == ("avg", "flatten")
    assert paper.model.fpn_norm and not code.model.fpn_norm


def test_baselines():
    simclr, uscl = load_method("simclr"), load_method("uscl")
    assert not simclr.model.fpn and simclr.loss.terms == ("global",) and simclr.model.init == "random"
    assert uscl.loss.kind == "uscl" and uscl.loss.lam == 0.2 and uscl.data.pairs == "uscl"
    assert (uscl.model.head_layers, uscl.model.hidden_dim, uscl.model.head_dim) == (2, 512, 256)
    baseline = load_method(BASELINE)  # the ablation's SimCLR row: the paper's model, the other rows' recipe
    assert not baseline.model.fpn and baseline.loss.terms == ("global",) and baseline.data.label_rate == 0
    assert baseline.model.init == load_method("hico").model.init == "imagenet"


def test_overrides_are_typed_and_checked():
    cfg = load_method("hico", ["loss.lam=0.3", "model.levels=[p2, p3, p5]", "augment.size=112"])
    assert cfg.loss.lam == 0.3 and cfg.model.levels == ("p2", "p3", "p5") and cfg.augment.size == 112
    with pytest.raises(ConfigError, match=r"unknown key loss.lamda \(did you mean 'lam'\?\)"):
        load_method("hico", ["loss.lamda=0.3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_method("hico", ["lam"])
    with pytest.raises(ConfigError, match="lam must be in"):
        load_method("hico", ["loss.lam=2"])


def _fields_of_type(*types) -> list[tuple[str, type, str]]:
    """(section, dataclass, key) of every field of every section whose annotated type is one of ``types``."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        out += [(section, cls, f.name) for f in dataclasses.fields(cls) if hints[f.name] in types]
    return out


FLOAT_KEYS = _fields_of_type(float)
INT_KEYS = _fields_of_type(int)
FLOAT_TUPLE_KEYS = _fields_of_type(tuple[float, float])


def test_numeric_keys_are_found_by_type():
    keys = {f"{s}.{k}" for s, _, k in FLOAT_KEYS + INT_KEYS + FLOAT_TUPLE_KEYS}
    assert {"train.lr", "train.weight_decay", "loss.lam", "train.epochs", "augment.scale"} <= keys
    assert len(FLOAT_KEYS) >= 15 and len(INT_KEYS) >= 20


@pytest.mark.parametrize(("section", "cls", "key"), FLOAT_KEYS, ids=[f"{s}.{k}" for s, _, k in FLOAT_KEYS])
def test_every_float_key_reads_every_spelling_of_a_number(section, cls, key):
    # YAML 1.1 reads 3e-4 and 1e9 as text, 1.0e-3 and 0.5 as floats: all four are numbers to a float field
    for text, number in (("3e-4", 3e-4), ("1e9", 1e9), ("1.0e-3", 1e-3), ("0.5", 0.5), ("2", 2.0)):
        value = typed_value(cls, key, yaml.safe_load(text), text)
        assert value == number and type(value) is float, text
    for text in ("abc", "true", ".nan", "[1, 2]"):
        with pytest.raises(ValueError, match=rf"expected a number \(float\), got '{re.escape(text)}'"):
            typed_value(cls, key, yaml.safe_load(text), text)


@pytest.mark.parametrize(("section", "cls", "key"), INT_KEYS, ids=[f"{s}.{k}" for s, _, k in INT_KEYS])
def test_every_int_key_reads_integral_numbers_only(section, cls, key):
    # an integral number in any spelling is the integer; a fraction is an error, never rounded
    for text, number in (("1e9", 10**9), ("1e3", 1000), ("1.0e+3", 1000), ("12", 12), ("-1", -1)):
        value = typed_value(cls, key, yaml.safe_load(text), text)
        assert value == number and type(value) is int, text
    for text in ("3e-4", "0.5", "1.0e-3", "abc", "true"):
        with pytest.raises(ValueError, match=r"expected an integer \(int\)"):
            typed_value(cls, key, yaml.safe_load(text), text)


@pytest.mark.parametrize(("section", "cls", "key"), FLOAT_TUPLE_KEYS, ids=[f"{s}.{k}" for s, _, k in FLOAT_TUPLE_KEYS])
def test_every_pair_of_numbers_reads_every_spelling(section, cls, key):
    assert typed_value(cls, key, yaml.safe_load("[3e-4, 1e9]")) == (3e-4, 1e9)
    assert typed_value(cls, key, yaml.safe_load("[1.0e-3, 0.5]")) == (1e-3, 0.5)
    with pytest.raises(ValueError, match=r"expected a list of 2 numbers \(float\)"):
        typed_value(cls, key, yaml.safe_load("[3e-4, abc]"))


def test_bool_keys_take_true_or_false_only():
    keys = _fields_of_type(bool)
    assert {f"{s}.{k}" for s, _, k in keys} >= {"model.fpn", "train.compile"}
    for _, cls, key in keys:
        assert typed_value(cls, key, yaml.safe_load("false")) is False
        for text in ("1", "0", "0.0", "on_", "'true'"):
            with pytest.raises(ValueError, match=r"expected true or false \(bool\)"):
                typed_value(cls, key, yaml.safe_load(text), text)


def _exponent(value: float) -> str:
    """A number in the spelling YAML 1.1 reads as text: 3e-4, 2.24e2, 0e0."""
    mantissa, exp = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"


def test_every_numeric_key_takes_exponent_notation_on_the_command_line_and_in_a_file(tmp_path):
    """End to end through load_method, with each key's own value (in range) written as 3e-4 / 2.24e2."""
    hico = load_method("hico").to_dict()
    for section, _, key in FLOAT_KEYS + INT_KEYS:
        value = hico[section][key]
        cfg = load_method("hico", [f"{section}.{key}={_exponent(value)}"])
        got = getattr(getattr(cfg, section), key)
        assert got == value and type(got) is type(value), (section, key, _exponent(value), got)
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: hico\ntrain:\n  lr: 3e-4\n  weight_decay: 1e-4\n  max_steps: 1e3\nloss:\n  lam: 1e-1\n")
    cfg = load_method(mine)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.max_steps, cfg.loss.lam) == (3e-4, 1e-4, 1000, 0.1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=abc", "--set train.lr=abc: expected a number (float), got 'abc'"),
        ("train.epochs=0.5", "--set train.epochs=0.5: expected an integer (int), got '0.5'"),
        ("model.fpn=1", "--set model.fpn=1: expected true or false (bool), got '1'"),
        ("augment.scale=[0.8, x]", "--set augment.scale=[0.8, x]: expected a list of 2 numbers (float), got"),
        ("train.lr=-1", "--set train.lr=-1: train.lr must be > 0"),  # the override, not hico.yaml, is wrong
    ],
)
def test_a_bad_override_names_itself_and_what_was_expected(override, message):
    with pytest.raises(ConfigError) as e:
        load_method("hico", [override])
    assert str(e.value).startswith(message) and "hico.yaml" not in str(e.value)


def test_a_bad_value_in_a_file_names_the_file_and_the_key(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: hico\ntrain:\n  lr: abc\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: train.lr: expected a number \(float\), got 'abc'"):
        load_method(mine, ["train.epochs=3"])
    mine.write_text("extends: hico\nmodel:\n  fpn: 1\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: model.fpn: expected true or false \(bool\), got 1"):
        load_method(mine)


def test_unknown_method_and_bad_files_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'hicoo' \\(did you mean 'hico'\\?\\)"):
        load_method("hicoo")
    bad = tmp_path / "mine.yaml"
    bad.write_text("extends: hico\nmodel:\n  levelz: [p2, p4, p5]\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: unknown key model.levelz \(did you mean 'levels'\?\)"):
        load_method(bad)
    bad.write_text("modle: {}\n")
    with pytest.raises(ConfigError, match="unknown section 'modle'"):
        load_method(bad)
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_method(bad)


def test_user_file_extends_a_named_method(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("description: my run\nextends: hico-code\nloss:\n  lam: 0.7\n")
    cfg = load_method(mine)
    assert cfg.name == "mine" and cfg.loss.lam == 0.7 and cfg.loss.cross_pairing == "same_view"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.fpn=false"], "need the local/medium levels"),
        (["model.num_classes=0"], "model.num_classes is 0"),
        (["augment.size=112"], None),
    ],
)
def test_cross_section_checks(overrides, message):
    if message is None:
        with pytest.raises(ConfigError, match=r"model.image_size \(224\) must equal augment.size \(112\)"):
            load_method("hico-code", overrides)
    else:
        with pytest.raises(ConfigError, match=message):
            load_method("hico", overrides)
