import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def glass_cache(tmp_path_factory):
    """Exports and priors go to a fresh cache per run (GLASS_ONNX_TEST_CACHE keeps one between runs)."""
    path = os.environ.get("GLASS_ONNX_TEST_CACHE") or str(tmp_path_factory.mktemp("glass-cache"))
    os.environ["GLASS_ONNX_CACHE"] = path
    return Path(path)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_dense(tiny_dir, tmp_path_factory):
    from glass_onnx.compiler.export import export_dense

    return export_dense(str(tiny_dir), tmp_path_factory.mktemp("tiny-dense") / "out")


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def compile_tiny(dense, out, **options):
    from glass_onnx.compiler.compile import CompileOptions, compile_model

    options.setdefault("prior_samples", 8)
    options.setdefault("prior_tokens", 32)
    options.setdefault("budget", "uniform")  # 32 sampled tokens are too few to calibrate (test_budgets.py does)
    options.setdefault("warmup", 0)  # the paper's GLASS: sparse from the first generated token (test_warmup.py)
    return compile_model(str(dense), out, CompileOptions(**options))


@pytest.fixture(scope="session")
def tiny_compiled(tiny_dense, tmp_path_factory):
    """Compiled tiny artifacts, built on demand: tiny_compiled(method=..., sparsity=..., fusion=...)."""
    built = {}
    root = tmp_path_factory.mktemp("tiny-compiled")

    def get(**options):
        key = tuple(sorted(options.items()))
        if key not in built:
            built[key] = compile_tiny(tiny_dense, root / f"c{len(built)}", **options)
        return built[key]

    return get
