"""The artifact manifest: the contract between the compiler and every runtime (Python, Node, ...).

An artifact directory holds ``manifest.json``, the ONNX graph(s) it names under ``sessions``, their external
weights, and the tokenizer files. The manifest alone says how to drive the sessions; ``manifest.schema.json``
(beside this module) describes it and README "Runtime protocol" says how to use it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.json_schema import first_problem
from glass_onnx.runtime.protocol import FORMAT, FORMAT_VERSION, MANIFEST, SCHEMA

HASHED_BYTES = 64 << 20  # files up to this size are hashed; weight files are only sized (hashing 0.5 GB costs seconds)


def load_manifest(directory: str | Path) -> dict:
    """Read and check an artifact's manifest: format, version, and that every listed file is whole."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise GlassError(f"'{directory}' is not a directory; pass the output of 'glass-onnx export' or 'compile'")
    if not path.exists():
        raise GlassError(f"'{directory}' has no {MANIFEST}; it is not a glass-onnx artifact "
                         "(export or compile it again)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlassError(f"'{path}' is corrupted ({e.msg if hasattr(e, 'msg') else e}); "
                         "export or compile again") from None
    if manifest.get("format") != FORMAT:
        raise GlassError(f"'{path}' is not a glass-onnx manifest; export or compile the model again")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise GlassError(
            f"'{directory}' has artifact format {version}, this glass-onnx reads format {FORMAT_VERSION}; "
            "recompile it with this version (or install the glass-onnx that made it)"
        )
    if problem := first_problem(manifest, schema()):
        raise GlassError(f"'{path}' is not a complete glass-onnx manifest: {problem}; export or compile again")
    for name, info in manifest["files"].items():
        file = directory / name
        if not file.exists():
            raise GlassError(f"'{file}' is missing; the artifact is incomplete, export or compile it again")
        if file.stat().st_size != info["bytes"]:
            raise GlassError(
                f"'{file}' is {file.stat().st_size} bytes, the manifest says {info['bytes']}: "
                "the artifact is truncated or corrupted, export or compile it again"
            )
        if "sha256" in info and _sha256(file) != info["sha256"]:
            raise GlassError(
                f"'{file}' is not the file this manifest was written with (changed or copied from another "
                "artifact, so the sessions may not fit together); export or compile it again"
            )
    return manifest


def keep_summary(glass: dict) -> str:
    """'48/96 FFN neurons per layer', or with per-layer budgets '48/96 FFN neurons per layer on average (32-64)'."""
    budgets = glass["k_per_layer"]
    spread = "" if len(set(budgets)) == 1 else f" on average ({min(budgets)}-{max(budgets)})"
    return f"{glass['k']}/{glass['intermediate_size']} FFN neurons per layer{spread}"


@functools.cache
def schema() -> dict:
    """The manifest's JSON Schema (format ``FORMAT_VERSION``)."""
    return json.loads(Path(__file__).with_name(SCHEMA).read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_entries(directory: Path) -> dict:
    """The ``files`` section: every file's size, so truncation is caught at load, and for the small files (graphs,
    tokenizer) a hash, so a graph swapped in from another artifact is caught too."""
    entries = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name != MANIFEST:
            entries[p.name] = {"bytes": p.stat().st_size}
            if p.stat().st_size <= HASHED_BYTES:
                entries[p.name]["sha256"] = _sha256(p)
    return entries


def write_manifest(directory: Path, manifest: dict) -> None:
    """Write ``manifest.json`` for the files now in ``directory``; a manifest that breaks the schema is a bug."""
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": file_entries(directory)}
    if problem := first_problem(manifest, schema()):
        raise AssertionError(f"glass-onnx wrote a manifest that breaks its schema: {problem}")
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
