"""Artifacts appear whole or not at all: they are written into a temporary sibling directory and renamed.

The temporary directory is ``.NAME.partial-PID-XXXX``. It is removed when the block fails, is interrupted (Ctrl-C) or
the process gets SIGTERM; what a killed process (SIGKILL, power loss) leaves behind is swept by the next write of
the same output, once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from glass_onnx.runtime.errors import GlassError


def refuse_existing(output: str | Path, force: bool) -> None:
    """The one check every command that writes an output directory makes before any work."""
    if Path(output).exists() and not force:
        raise GlassError(f"'{output}' already exists; choose another -o or pass --force to replace it")


@contextlib.contextmanager
def atomic_directory(output: str | Path, force: bool = False):
    """Yield a temporary directory that replaces ``output`` only when the block finishes without error."""
    output = Path(output)
    refuse_existing(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-{os.getpid()}-", dir=output.parent))
    try:
        with _sigterm_raises():
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


@contextlib.contextmanager
def _sigterm_raises():
    """Within the block SIGTERM raises SystemExit(143), so the cleanup above runs as it does for Ctrl-C (only where
    the process left SIGTERM at its default: the main thread of a program with no handler of its own)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _sweep_stale(output: Path) -> None:
    """Remove the partial and old directories of ``output`` whose writing process no longer runs."""
    for leftover in [*output.parent.glob(f".{output.name}.partial-*"), *output.parent.glob(f".{output.name}.old-*")]:
        pid = leftover.name.rsplit(".partial-", 1)[-1].rsplit(".old-", 1)[-1].split("-")[0]
        if not pid.isdigit() or not _running(int(pid)):  # no pid: left by an older glass-onnx
            shutil.rmtree(leftover, ignore_errors=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # no harmless liveness probe (os.kill would terminate it): leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def created_by() -> dict:
    """The manifest's ``build.created_by``: the tools' versions and the command line."""
    return {**versions(), "command": " ".join(shlex.quote(a) for a in sys.argv)}
