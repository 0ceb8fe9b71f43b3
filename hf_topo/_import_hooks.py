"""What ``import hf_topo`` arranges with transformers: its model classes in the Auto classes, and no broken torchvision.

After ``import hf_topo``, ``AutoConfig`` / ``AutoModelForCausalLM`` / ``AutoModelForImageClassification``
``.from_pretrained`` load hf_topo's own model types (the downsampled models, the blur-pool ResNet, Truong &
Hasson's CNN) with no ``trust_remote_code``. Defining those classes imports torch and the model families (seconds),
which ``hf-topo --help`` or a script that only reads a record should not pay for, so the registration is tied to the
two modules of transformers that resolve a ``model_type``:

==============================================  ===========================================================
once this transformers module has loaded        hf_topo imports (each module registers its classes)
==============================================  ===========================================================
``transformers.models.auto.configuration_auto``  :data:`CONFIG_MODULES` (config classes → ``AutoConfig``)
``transformers.models.auto.modeling_auto``       :data:`MODEL_MODULES` (model classes → ``AutoModel*``)
==============================================  ===========================================================

A module already loaded when hf_topo is imported triggers its registrations at once. Otherwise a ``sys.meta_path``
entry watches the imports of ``transformers`` and ``hf_topo`` modules and registers once a trigger module has loaded
*and* the outermost of those imports has finished: transformers imports its Auto modules from inside other imports
(``from transformers import GPT2Config`` builds its docstring from ``modeling_auto`` while ``configuration_gpt2`` is
half executed), and hf_topo's classes need those half-built modules whole. Every path to a ``model_type`` goes through
the trigger modules, and the registration has run before that outermost import returns, so no lookup can see the
Auto mappings without hf_topo's classes. Once everything is registered the watcher removes itself.

The watcher also runs :func:`hf_topo._torchvision_guard.hide_broken_torchvision` just before ``transformers`` itself
executes (or at once if it already has), so a torchvision that cannot be imported is hidden before transformers looks
for it, without ``import hf_topo`` importing torch.

A new registered class is one entry: its config's module in :data:`CONFIG_MODULES`, its model's in
:data:`MODEL_MODULES`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading

__all__ = ["CONFIG_MODULES", "MODEL_MODULES", "register_with_auto_classes"]

#: Modules that define hf_topo's config classes and register them with ``AutoConfig`` when imported.
CONFIG_MODULES: tuple[str, ...] = (
    "hf_topo.downsampling.configs",
    "hf_topo.vision.blurpool_resnet_config",
    "hf_topo.vision.truong_hasson_cnn_config",
)
#: Modules that define hf_topo's model classes and register them with the Auto model classes when imported.
MODEL_MODULES: tuple[str, ...] = (
    "hf_topo.downsampling.models",
    "hf_topo.vision.blurpool_resnet",
    "hf_topo.vision.truong_hasson_cnn",
)

#: trigger module → what it makes hf_topo import, in this order (configs before models).
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "transformers.models.auto.configuration_auto": CONFIG_MODULES,
    "transformers.models.auto.modeling_auto": MODEL_MODULES,
}
_WATCHED_PACKAGES = ("transformers", "hf_topo")

_lock = threading.RLock()
_local = threading.local()  # per thread: how deep inside imports of watched modules it is
_triggered: set[str] = set()
_registered: set[str] = set()


def _hide_broken_torchvision() -> None:
    from ._torchvision_guard import hide_broken_torchvision

    hide_broken_torchvision()


def _loaded(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register_triggered() -> None:
    """Import the modules of every trigger that has loaded (configs first); once all are, stop watching."""
    with _lock:
        if getattr(_local, "registering", False):
            return  # the imports below pass through the watcher again
        _local.registering = True
        try:
            for trigger, modules in _TRIGGERS.items():  # re-read: registering the configs can load modeling_auto
                if trigger in _triggered and trigger not in _registered:
                    _registered.add(trigger)
                    for name in modules:
                        importlib.import_module(name)
        finally:
            _local.registering = False
        if _registered == set(_TRIGGERS):
            sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _ImportWatcher)]


class _WatchedLoader(importlib.abc.Loader):
    """The real loader of a watched module, with the bookkeeping around its execution."""

    def __init__(self, loader: importlib.abc.Loader, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        if self._name == "transformers":
            _hide_broken_torchvision()  # before transformers decides whether torchvision is there
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _local.depth -= 1
        if self._name in _TRIGGERS:
            _triggered.add(self._name)
        if _local.depth == 0 and _triggered - _registered:
            _register_triggered()

    def __getattr__(self, name: str):  # get_filename, get_data, resource readers... of the real loader
        return getattr(self._loader, name)


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """The ``sys.meta_path`` entry that wraps the loaders of ``transformers`` and ``hf_topo`` modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] not in _WATCHED_PACKAGES:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _WatchedLoader):
                    spec.loader = _WatchedLoader(spec.loader, fullname)
                return spec
        return None


def register_with_auto_classes() -> None:
    """Register hf_topo's model classes with transformers' Auto classes now where transformers' Auto modules are
    loaded, else as soon as they are (see the module docstring). Called by ``import hf_topo``; calling it again is
    harmless."""
    with _lock:
        if _loaded("transformers"):
            _hide_broken_torchvision()
        if _registered != set(_TRIGGERS) and not any(isinstance(f, _ImportWatcher) for f in sys.meta_path):
            # first: registering the configs below can load modeling_auto, which must be seen
            sys.meta_path.insert(0, _ImportWatcher())
        _triggered.update(trigger for trigger in _TRIGGERS if _loaded(trigger))
        if _triggered - _registered:
            _register_triggered()
