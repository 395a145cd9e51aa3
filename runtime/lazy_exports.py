"""Package attributes imported on first use: importing one light module of a package (its errors, its protocol
names) then does not load ONNX Runtime or the ONNX IR, so the CLI starts fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a submodule) on first access."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        module = importlib.import_module(f"{package}.{exports[name]}")
        return module if name == exports[name] else getattr(module, name)

    return __getattr__
