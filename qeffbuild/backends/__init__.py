"""The backends room: one file per compile backend, found and registered here.

A backend file defines a :class:`~qeffbuild.core.plugins.Backend` subclass: its plan-time
description (devices, refused dtypes, toolchain, availability), its worker-side ``compile``,
the session that opens its artifacts and the runtimes that use it. The heavy libraries are
imported inside those functions only. Adding a backend is adding a file.

    ort.py    ONNX Runtime offline-optimized model, fixed shapes (runtime: onnxruntime)
    aoti.py   torch AOTInductor package (runtime: aoti)
    qaic.py   Qualcomm Cloud AI 100 (qaic-compile)
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from ..core.plugins import Backend, submodule_names

if TYPE_CHECKING:
    from ..core.plugins import Plugins


def register(plugins: Plugins) -> None:
    for name in submodule_names(__name__):  # one backend file that fails to import leaves the others working
        plugins.guarded(name, functools.partial(_register_module, plugins, name), f"fix {name} or remove it")


def _register_module(plugins: Plugins, name: str) -> None:
    module = importlib.import_module(name)
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Backend) and obj.__module__ == module.__name__:
            backend = obj()
            plugins.backends.add(backend.name, backend)
            for runtime in backend.runtimes:
                plugins.runtimes.add(runtime.name, runtime)
