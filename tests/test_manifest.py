"""The manifest and its JSON Schema: a valid draft 2020-12 schema, every written manifest conforms, and the
runtime's own checker (runtime/json_schema.py) agrees with the jsonschema library on manifests broken on purpose."""

import copy
import json

import jsonschema
import pytest

from glass_onnx.runtime.json_schema import first_problem
from glass_onnx.runtime.manifest import schema

BREAKS = [
    ("drop model.num_layers", lambda m: m["model"].pop("num_layers"), "model.num_layers is missing"),
    ("drop glass.k", lambda m: m["glass"].pop("k"), "glass.k is missing"),
    ("drop glass", lambda m: m.pop("glass"), "glass is missing"),
    ("drop fast.io.compact.kept", lambda m: m["fast"]["io"]["compact"].pop("kept"), "fast.io.compact.kept is missing"),
    ("k as text", lambda m: m["glass"].__setitem__("k", "48"), "glass.k should be integer, not string"),
    ("k zero", lambda m: m["glass"].__setitem__("k", 0), "glass.k should be at least 1, not 0"),
    ("unknown kind", lambda m: m.__setitem__("kind", "sparse"), 'kind should be one of "dense", "glass", not "sparse"'),
    ("template without {layer}", lambda m: m["io"].__setitem__("past_key", "past"), "io.past_key should match"),
    ("position_ids a number", lambda m: m["io"].__setitem__("position_ids", 3),
     "io.position_ids should be string or null"),
    ("file size as float", lambda m: next(iter(m["files"].values())).__setitem__("bytes", 1.5),
     "should be integer, not number"),
    ("ffn weights dtype", lambda m: m["fast"]["ffn_weights"][0]["down"].__setitem__("dtype", "int4"),
     'fast.ffn_weights[0].down.dtype should be one of "float32", "uint8", not "int4"'),
    ("int4 without its quantisation", lambda m: m.__setitem__("weights", "int4"), "quantization is missing"),
]


@pytest.fixture(scope="module")
def manifests(tiny_dense, tiny_compiled):
    return {"dense": json.loads((tiny_dense / "manifest.json").read_text()),
            "glass": json.loads((tiny_compiled(method="a-glass", sparsity=0.5) / "manifest.json").read_text()),
            "glass int4": json.loads((tiny_compiled(method="a-glass", sparsity=0.5, weights="int4")
                                      / "manifest.json").read_text())}


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(schema())


def test_written_manifests_conform(manifests):
    for manifest in manifests.values():
        jsonschema.Draft202012Validator(schema()).validate(manifest)
        assert first_problem(manifest, schema()) is None
    # a device needs none of the provenance: it is all under build
    assert {"source", "dense_export", "prior", "created_by"} <= set(manifests["glass"]["build"])
    assert not {"source", "id"} & set(manifests["glass"]["model"]) and "prior" not in manifests["glass"]["glass"]


@pytest.mark.parametrize("name,breaks,problem", BREAKS, ids=[b[0] for b in BREAKS])
def test_checker_agrees_with_jsonschema(manifests, name, breaks, problem):
    broken = copy.deepcopy(manifests["glass"])
    breaks(broken)
    assert not jsonschema.Draft202012Validator(schema()).is_valid(broken)
    found = first_problem(broken, schema())
    assert found is not None and problem in found, found


def test_a_broken_manifest_is_one_line(capsys, tiny_compiled, tmp_path):
    import shutil

    from glass_onnx.cli import main

    art = shutil.copytree(tiny_compiled(method="a-glass", sparsity=0.5), tmp_path / "a")
    manifest = json.loads((art / "manifest.json").read_text())
    del manifest["glass"]["handoff"]
    (art / "manifest.json").write_text(json.dumps(manifest))
    assert main(["generate", str(art), "The sea"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: '{art / 'manifest.json'}' is not a complete glass-onnx manifest: glass.handoff is "
                   "missing; export or compile again"]
