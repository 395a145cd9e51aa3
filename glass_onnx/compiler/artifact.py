"""Artifacts appear whole or not at all: they are written into a temporary sibling directory and renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from glass_onnx.runtime.errors import GlassError


@contextlib.contextmanager
def atomic_directory(output: str | Path, force: bool = False):
    """Yield a temporary directory that replaces ``output`` only when the block finishes without error."""
    output = Path(output)
    if output.exists() and not force:
        raise GlassError(f"'{output}' already exists; choose another -o or pass --force to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.rename(output, old)
        os.rename(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, output)


def cache_dir() -> Path:
    """Where exports, priors and assembled weights are cached (GLASS_ONNX_CACHE overrides)."""
    return Path(os.environ.get("GLASS_ONNX_CACHE", Path.home() / ".cache" / "glass-onnx"))


def versions() -> dict:
    """Versions of the tools that made an artifact, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("glass-onnx", "torch", "transformers", "onnx", "onnx-ir", "onnxscript", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    found["python"] = sys.version.split()[0]
    return found
