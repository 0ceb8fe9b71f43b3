"""The shape of the package: its modules import each other without a circle, and only through public names; `import
hf_topo` and `hf-topo --help` stay light.

The import graph is read from the source (``ast``), not from ``sys.modules``, so an import inside a function counts
as much as one at the top of a module: both decide which module has to exist before which.
"""

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _scripts import offline_env

import hf_topo
from hf_topo_cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_topo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """``(imported hf_topo module, names taken from it)`` for every import statement of ``module``, wherever it is
    (top level or inside a function), except those under ``if TYPE_CHECKING:``, which never run."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "hf_topo" or target.startswith("hf_topo."):
                names = [alias.name for alias in node.names]
                # `from . import config` imports the module hf_topo.config; `from . import __version__` the package.
                for name in names:
                    if f"{target}.{name}" in MODULES:
                        found.append((f"{target}.{name}", []))
                rest = [name for name in names if f"{target}.{name}" not in MODULES]
                if rest:
                    found.append((target, rest))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names if alias.name.split(".")[0] == "hf_topo")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: the hf_topo modules it imports}`` over every module of the package."""
    return {module: {target for target, _ in _imports(module)} - {module} for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def test_import_graph_sees_function_level_imports():
    # trainer.create_model_card imports hf_topo.hub inside the method: the graph must still show the edge.
    assert "hf_topo.hub" in import_graph()["hf_topo.trainer"]


def test_no_import_cycles():
    graph = import_graph()
    cycles = _cycles(graph)
    assert not cycles, "hf_topo modules that import each other in a circle:\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


def test_library_modules_do_not_import_the_package():
    # `from . import __version__` in a module that hf_topo/__init__.py imports is a circle through the package.
    offenders = sorted(
        module
        for module, targets in import_graph().items()
        if "hf_topo" in targets and not module.startswith("hf_topo.cli")
    )
    assert not offenders, f"{offenders} import from the hf_topo package itself; import from its modules instead."


def test_no_private_names_cross_modules():
    """A name with a leading underscore is private to its module: another module that needs it needs a public name."""
    offenders = [
        f"{module}: from {target} import {name}"
        for module in MODULES
        for target, names in _imports(module)
        for name in names
        if target != module and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
    ]
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


def test_version_agrees_with_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    (version,) = re.findall(r'^version\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
    assert version == hf_topo.__version__


def _package(module: str) -> str:
    """The unit of the package-level graph: ``hf_topo.analysis.temporal.fit`` → ``hf_topo.analysis``; a top-level
    module (``hf_topo.config``) is its own unit."""
    return ".".join(module.split(".")[:2])


    for old, new in (("losses", laplacian_pyramid), ("similarity", similarity), ("topo_loss", model)):
        sys.modules.pop(f"hf_topo.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shim = importlib.import_module(f"hf_topo.{old}")
        assert any(issubclass(w.category, DeprecationWarning) and new.__name__ in str(w.message) for w in caught)
        assert shim.__all__ == new.__all__
        for name in new.__all__:
            assert getattr(shim, name) is getattr(new, name)
    assert model.TopoLoss is model.TopoRegularizer is hf_topo.TopoLoss


def test_analysis_and_downsampling_do_not_import_each_other_back():
    """The analyses downsample (a perturbation sweep, `--save_downsampled`); downsampling measures with the shared
    token batches and perplexity of hf_topo.evaluation, never with the analysis package."""
    graph = import_graph()
    downsampling = {
        target for module, targets in graph.items() if module.startswith("hf_topo.downsampling") for target in targets
    }
    assert not {target for target in downsampling if target.startswith("hf_topo.analysis")}
    assert "hf_topo.downsampling" in graph["hf_topo.analysis.perturbation"]
