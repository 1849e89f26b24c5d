"""paradis_tf: train one ParaDiS network, run it spread over edge devices.

The top-level package imports without TensorFlow, so the node daemon, the
serial bridge and the runtime install and run on small boards. Import
`paradis_tf.models`, `paradis_tf.layers` or `paradis_tf.training` for the
Keras parts. Once Keras is loaded too, ``keras.saving.load_model`` loads a
saved ParaDiS model after a plain ``import paradis_tf``.
"""

import importlib.abc
import importlib.util
import sys

from paradis_tf.errors import ParaDiSError
from paradis_tf.switches import Switch, parse_switches

__version__ = "0.1.0"

__all__ = ["ParaDiSError", "Switch", "parse_switches", "__version__"]


def _register_keras_objects() -> None:
    # `keras.saving.load_model` finds `ParaDiSModel` and the ParaDiS layers
    # only once their modules have run (they register themselves as Keras
    # serializables). Importing them here would load TensorFlow into every
    # `import paradis_tf`, so this runs when Keras itself is loaded.
    import paradis_tf.models  # noqa: F401


class _AfterKerasLoads(importlib.abc.MetaPathFinder):
    """Runs `_register_keras_objects` right after ``keras`` finishes loading, then leaves ``sys.meta_path``."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    """Keras' own loader, followed by `_register_keras_objects`."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # resource readers and the like: Keras' loader answers
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader
        if not _keras_side_loading():
            _register_keras_objects()


def _keras_side_loading() -> bool:
    """Whether a module of paradis_tf is being imported (it imported Keras): importing `paradis_tf.models`
    now would re-enter it half-built; that import is on its way to, or is itself, the Keras side."""
    # `__spec__._initializing` is how the import system marks a module whose code is running.
    return any(getattr(getattr(m, "__spec__", None), "_initializing", False)
               for name, m in list(sys.modules.items()) if name.startswith("paradis_tf."))


if "keras" in sys.modules:
    _register_keras_objects()
else:
    sys.meta_path.insert(0, _AfterKerasLoads())
