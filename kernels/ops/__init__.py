"""One file per op: its spec (`kernels.spec.OpCase`) and its built-in implementations.

Importing this package imports every module in it, so a new op file needs no other edit.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
