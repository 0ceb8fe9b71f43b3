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
from hf_topo.cli import COMMANDS

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


def package_graph() -> dict[str, set[str]]:
    """``{subpackage or top-level module: those it imports}``, from :func:`import_graph` (function-level imports
    included)."""
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        graph.setdefault(_package(module), set()).update(_package(target) for target in targets)
    return {unit: targets - {unit} for unit, targets in graph.items()}


#: Package-level circles being removed on other branches of issue 28, each with who removes it. An entry that no
#: longer occurs fails the test below: delete it then. Anything not listed here fails the test.
KNOWN_PACKAGE_CYCLES: dict[tuple[str, ...], str] = {}


def test_package_graph_sees_subpackages_and_modules():
    graph = package_graph()
    assert "hf_topo.topo_regularizer" in graph["hf_topo.trainer"] and "hf_topo.sheet" in graph["hf_topo.downsampling"]
    assert "hf_topo.regularizers" in graph["hf_topo.topo_regularizer"]


def test_no_package_level_cycles():
    found = {tuple(cycle) for cycle in _cycles(package_graph())}
    new = sorted(found - set(KNOWN_PACKAGE_CYCLES))
    assert not new, "subpackages/modules that import each other in a circle:\n" + "\n".join(
        " <-> ".join(cycle) for cycle in new
    )
    gone = sorted(set(KNOWN_PACKAGE_CYCLES) - found)
    assert not gone, f"{gone} no longer import each other in a circle: delete them from KNOWN_PACKAGE_CYCLES."


#: What `import hf_topo` must not load: torch and transformers (its model classes join the Auto classes when those
#: load), optional or heavy dependencies, and the packages that use them.
NOT_LOADED_BY_IMPORT = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "hf_topo.analysis",
    "hf_topo.arrangement",
    "hf_topo.app",
    "hf_topo.blimp",
    "hf_topo.hub",
    "hf_topo.trainer",
)

#: model_type → (config class, model class, the Auto class that must resolve it) of every class hf_topo registers.
REGISTERED = {
    "hf_topo_downsampled_gpt2": (
        "TopoDownsampledGPT2Config",
        "TopoDownsampledGPT2LMHeadModel",
        "AutoModelForCausalLM",
    ),
    "hf_topo_downsampled_llama": (
        "TopoDownsampledLlamaConfig",
        "TopoDownsampledLlamaForCausalLM",
        "AutoModelForCausalLM",
    ),
    "hf_topo_downsampled_resnet": (
        "TopoDownsampledResNetConfig",
        "TopoDownsampledResNetForImageClassification",
        "AutoModelForImageClassification",
    ),
    "hf_topo_downsampled_vit": (
        "TopoDownsampledViTConfig",
        "TopoDownsampledViTForImageClassification",
        "AutoModelForImageClassification",
    ),
    "hf_topo_blurpool_resnet": (
        "BlurPoolResNetConfig",
        "BlurPoolResNetForImageClassification",
        "AutoModelForImageClassification",
    ),
    "hf_topo_truong_hasson_cnn": (
        "TruongHassonCNNConfig",
        "TruongHassonCNNForImageClassification",
        "AutoModelForImageClassification",
    ),
}


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=offline_env(), capture_output=True, text=True, timeout=600, cwd=ROOT
    )


_RESOLVE = (
    "import transformers\n"
    "found = {}\n"
    f"for model_type, (_, _, auto) in {REGISTERED!r}.items():\n"
    "    config = transformers.AutoConfig.for_model(model_type)\n"
    "    found[model_type] = [type(config).__name__, getattr(transformers, auto)._model_mapping[type(config)].__name__]\n"
)


@pytest.mark.parametrize("order", ["hf_topo first", "transformers first", "configs only first"])
@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_import_hf_topo_registers_the_model_classes_and_loads_nothing_else(order):
    """A bare `import hf_topo` loads neither torch nor transformers, and every class it registers resolves through
    the Auto classes however the two are imported: hf_topo before transformers, after transformers' Auto model
    classes, or after only its AutoConfig (its model classes then join when the Auto model classes load)."""
    before = {
        "hf_topo first": "",
        "transformers first": "from transformers import AutoModelForCausalLM\n",
        "configs only first": "from transformers import AutoConfig\n",
    }[order]
    code = (
        "import sys, json\n"
        + before
        + "import hf_topo\n"
        + f"loaded = [name for name in {NOT_LOADED_BY_IMPORT!r} if name in sys.modules]\n"
        + _RESOLVE
        + "print(json.dumps([loaded, found]))\n"
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded, found = json.loads(result.stdout.strip().splitlines()[-1])
    if order == "hf_topo first":
        assert loaded == [], f"`import hf_topo` loaded {loaded}"
    assert found == {model_type: [config, model] for model_type, (config, model, _) in REGISTERED.items()}


@pytest.mark.parametrize("package", ["hf_topo", "hf_topo.downsampling", "hf_topo.hub"])
def test_every_public_name_resolves_to_the_object_of_its_module(package):
    module = importlib.import_module(package)
    table = module._LAZY_NAMES
    assert sorted(set(module.__all__) - {"__version__"}) == sorted(table)
    for name, home in table.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name), name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_subpackages_are_attributes_of_the_package():
    assert hf_topo.analysis is importlib.import_module("hf_topo.analysis")
    assert "arrangement" in dir(hf_topo)


def test_the_old_names_are_gone():
    """0.1.0 was never released: no shim module, alias or re-export of a table is kept for old code."""
    for old in ("losses", "similarity", "topo_loss"):
        assert not (PACKAGE / f"{old}.py").exists()
    assert "TopoLoss" not in hf_topo.__all__
    import hf_topo.downsampling as downsampling
    from hf_topo import lora, models, targets

    assert not hasattr(downsampling, "_read_record") and not hasattr(downsampling, "_as_factors")
    assert "TARGET_PRESETS" not in targets.__all__ and "ATTENTION_TARGETS" not in lora.__all__
    assert "MODEL_PRESETS" not in models.__all__


def _console_script() -> tuple[str, str]:
    """``(module, function)`` of the ``hf-topo`` entry point that pyproject.toml declares (what `pip install` puts
    behind the command), read from the file so that the test does not depend on an up-to-date install."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (entry,) = re.findall(r'^hf-topo\s*=\s*"([^"]+)"', pyproject, flags=re.MULTILINE)
    module, function = entry.split(":")
    return module, function


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["pretrian"]])
def test_the_command_lists_and_refuses_without_importing_torch_or_transformers(argv):
    module, function = _console_script()
    code = (
        "import sys, json\n"
        f"sys.argv = ['hf-topo', *{argv!r}]\n"
        f"from {module} import {function} as main\n"
        "code = main()\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'})\n"
        "print(json.dumps([code, heavy]))\n"
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    code, heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert heavy == []
    if argv == ["--help"]:
        assert code == 0 and all(f"\n  {name} " in result.stdout for name in COMMANDS)
    elif argv == ["--version"]:
        assert code == 0 and f"hf-topo {hf_topo.__version__}" in result.stdout
    else:
        assert code == 2 and "Did you mean pretrain?" in result.stderr


def test_analysis_and_downsampling_do_not_import_each_other_back():
    """The analyses downsample (a perturbation sweep, `--save_downsampled`); downsampling measures with the shared
    token batches and perplexity of hf_topo.evaluation, never with the analysis package."""
    graph = import_graph()
    downsampling = {
        target for module, targets in graph.items() if module.startswith("hf_topo.downsampling") for target in targets
    }
    assert not {target for target in downsampling if target.startswith("hf_topo.analysis")}
    assert "hf_topo.downsampling" in graph["hf_topo.analysis.perturbation"]
