"""The package's shape: layers without cycles, the command line outside the library and torch-free, one loader.

The import graph is read from the source with ``ast`` (every ``import`` at any depth, function-level lazy imports
included; only the ones under ``if TYPE_CHECKING:`` are left out: they never run). A module may import modules of
its own layer or of lower layers, never of a higher one, and no chain of imports may come back to where it began.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hico"

LAYERS: list[tuple[str, ...]] = [
    ("hico", "hico.errors", "hico.names", "hico.paths", "hico.checks", "hico.io", "hico.dist"),  # base: no hico imports
    ("hico.data",),  # videos, frames, splits, pairs, augmentation
    ("hico.models",),  # HiCoNet, its config, backbone files
    ("hico.losses",),  # the objectives
    ("hico.engine",),  # one training step
    ("hico.methods",),  # a method = model outputs + loss + extra state
    ("hico.config",),  # YAML method files -> the dataclasses of the sections above
    ("hico.train.rundir", "hico.train.labelled"),  # a run directory's files, which evaluation reads too
    ("hico.eval",),  # features, k-NN, probe, fine-tuning of a backbone (the trainer's k-NN monitor uses it)
    ("hico.train",),  # pretraining
    ("hico.runs", "hico.demo", "hico.study"),  # processes and run folders for the app; the demo; the study
    ("hico.cli",),  # the command line, on top of everything
]
"""Lowest first. A module belongs to the layer of its longest listed prefix."""

LIBRARY_WITHOUT_ARGPARSE = ("hico.data", "hico.models", "hico.eval", "hico.train", "hico.losses", "hico.config")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _runtime_imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those inside ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from P import m`` counts as importing ``P.m`` when ``m`` is
    a module, else as importing ``P``); imports from outside the package are left out."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in files]
                targets = subs if subs and len(subs) == len(node.names) else [target, *subs]
            for t in targets:
                while t and t not in files:  # `import hico.models.x.y` -> the deepest module that exists
                    t = t.rpartition(".")[0]
                if t and t != name and (t == "hico" or t.startswith("hico.")):
                    deps.add(t)
        graph[name] = deps
    return graph


def layer_of(module: str) -> int:
    best, found = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), i
    if found is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_graph_is_read_from_the_source():
    """The parser sees top-level, relative and function-level imports (else the checks below prove nothing)."""
    graph = import_graph()
    assert "hico.models.checkpoint" in graph["hico.models.hiconet"]  # from .checkpoint import ...
    assert "hico.eval.features" in graph["hico.train.trainer"]  # inside a method
    assert "hico.cli.data" in graph["hico.cli"]  # inside build_parser: from hico.cli import data, ...
    assert "hico.dist" in graph["hico.eval.finetune"]


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    graph = import_graph()
    upward = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, deps in sorted(graph.items())
        for b in sorted(deps)
        if layer_of(b) > layer_of(a)
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_library_holds_no_argparse_and_never_imports_the_cli():
    files = module_files()
    offenders = []
    for name, path in files.items():
        if name == "hico.cli" or name.startswith("hico.cli."):
            continue
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                if n == "argparse" and name.startswith(LIBRARY_WITHOUT_ARGPARSE):
                    offenders.append(f"{name} imports argparse")
                if n == "hico.cli" or n.startswith("hico.cli."):
                    offenders.append(f"{name} imports {n}")
    assert not offenders, "\n".join(offenders)


def test_help_and_data_scan_import_no_torch(tmp_path):
    """``import hico.cli``, ``hico --help``, every sub-command's --help and ``hico data scan`` leave torch unloaded."""
    from hico.data.synth import write_dataset

    data = write_dataset(tmp_path / "tiny", 1, 2, 32, progress=False)
    code = f"""
import contextlib, io, json, sys
import hico.cli
seen = {{"import": "torch" in sys.modules}}
for argv in (["--help"], ["pretrain", "--help"], ["finetune", "--help"], ["probe", "--help"], ["embed", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            hico.cli.main(argv)
        except SystemExit:
            pass
seen["help"] = "torch" in sys.modules
with contextlib.redirect_stdout(io.StringIO()) as out:
    status = hico.cli.main(["data", "scan", {str(data)!r}, "--json", "--no-cache", "--size", "32"])
seen["scan"] = "torch" in sys.modules
seen["status"], seen["videos"] = status, json.loads(out.getvalue())["videos"]
print(json.dumps(seen))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"import": False, "help": False, "scan": False, "status": 0, "videos": 3}


def test_cli_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "hico.cli", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0 and result.stdout.startswith("hico "), result.stderr


@pytest.mark.parametrize("fpn_in_file", [False, True])
def test_one_backbone_loader_takes_a_file_without_config(tmp_path, fpn_in_file):
    """A weights file with no stored config (a torchvision ResNet-18 state dict; a bare HiCoNet state dict with
    FPN weights) loads through resolve_backbone, the loader behind probe, embed, finetune and the app."""
    import torchvision

    from hico.models import HiCoNet, ModelConfig, resolve_backbone

    if fpn_in_file:
        source = HiCoNet(ModelConfig())
        state = source.backbone_state_dict()
        expected = state
    else:
        reference = torchvision.models.resnet18(weights=None)
        state = reference.state_dict()
        expected = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "weights.pt")
    model = resolve_backbone(tmp_path / "weights.pt")
    assert model.config.fpn == fpn_in_file
    own = model.backbone_state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0)
    # built with a seed, the new heads are the same network on every call, and the global RNG is untouched
    before = torch.random.get_rng_state()
    a, b = (resolve_backbone(tmp_path / "weights.pt", seed=0) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), before)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_shared_names_and_checks_have_one_home():
    """The level names, the loss terms, the project folder and the 'no readable video' check are each written
    once: in hico/names.py, hico/paths.py and hico/data/dataset.py."""
    homes = {"LEVEL_NAMES": None, "EMBEDDING_NAMES": None, "TERMS": "hico.names", "PROJECT_ROOT": "hico.paths"}
    found = []
    for name, path in module_files().items():
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            for t in targets:
                if isinstance(t, ast.Name) and t.id in homes and homes[t.id] != name:
                    found.append(f"{name} defines {t.id}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and name != "hico.names":
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if values == ["local", "medium", "global"]:
                    found.append(f"{name} spells out the level names (line {node.lineno}): use hico.names.LEVELS")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "no readable video" in node.value:
                if name != "hico.data.dataset":
                    found.append(f"{name} writes the 'no readable video' check (use VideoDataset.require_videos)")
    assert not found, "\n".join(found)
