"""Artifacts appear whole or not at all: an interrupted or terminated write leaves nothing, and what a killed
process left behind is swept by the next write of the same output."""

import os
import signal
import subprocess
import sys

import pytest

from glass_onnx.compiler.artifact import atomic_directory

WRITER = """
import sys, time
from glass_onnx.compiler.artifact import atomic_directory
with atomic_directory(sys.argv[1]) as tmp:
    (tmp / "weights.bin").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def partials(directory):
    return sorted(p.name for p in directory.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
def test_sigterm_while_writing_leaves_nothing(tmp_path):
    out = tmp_path / "artifact"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert len(partials(tmp_path)) == 1  # the partial directory exists while it writes
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert partials(tmp_path) == [] and not out.exists()


@pytest.mark.skipif(os.name != "posix", reason="process ids")
def test_stale_partials_of_the_same_output_are_swept(tmp_path):
    out = tmp_path / "artifact"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)  # a process that has exited
    for name in (f".artifact.partial-{dead}-abc", f".artifact.old-{dead}", ".artifact.partial-x1y2z3",
                 f".artifact.partial-{os.getpid()}-live", f".other.partial-{dead}-abc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.bin").write_bytes(b"x")
    with atomic_directory(out) as tmp:
        (tmp / "manifest.json").write_text("{}")
    # the dead writer's leftovers (and an older glass-onnx's, which carry no pid) go; a live writer's and another
    # output's stay
    assert partials(tmp_path) == [f".artifact.partial-{os.getpid()}-live", f".other.partial-{dead}-abc"]
    assert (out / "manifest.json").exists()


def test_an_error_inside_the_block_leaves_nothing(tmp_path):
    out = tmp_path / "artifact"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert partials(tmp_path) == [] and not out.exists()
