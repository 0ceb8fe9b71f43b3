"""Lazy attributes of a package (PEP 562): a public name is imported from its module the first time it is used.

TRL's ``trl/__init__.py`` does the same with ``_LazyModule``; here it is two module-level functions built from an
explicit ``{name: module}`` table, so that ``from hf_topo import TopoTrainer`` imports :mod:`hf_topo.trainer` (and
transformers' Trainer, peft...) only when it runs, while ``import hf_topo`` stays light. A package uses it as::

    __getattr__, __dir__ = lazy_attributes(__name__, {"TopoConfig": "hf_topo.config"})

and lists the same names under ``if TYPE_CHECKING:`` for IDEs and type checkers.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names are imported on first use.

    Args:
        package: the package's ``__name__``.
        names: public name → the full name of the module that defines it (the name is read from that module).

    Returns:
        ``(__getattr__, __dir__)``, to assign at the package's top level. ``__getattr__`` imports a name of
        ``names`` from its module, or a public submodule of the package (``hf_topo.analysis`` after a bare
        ``import hf_topo``, as before the package was lazy); it caches what it imported in the package's namespace,
        so it runs once per name, and raises ``AttributeError`` for any other name.
    """
    names = dict(names)

    def submodules() -> set[str]:
        # the package's folder, listed without importing anything
        return {info.name for info in pkgutil.iter_modules(sys.modules[package].__path__) if info.name[0] != "_"}

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
        elif not name.startswith("_") and name in submodules():
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names) | submodules())

    return __getattr__, __dir__
