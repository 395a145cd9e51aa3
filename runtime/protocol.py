"""The runtime protocol: the names of an artifact's files, session inputs and outputs, in one place.

The runtime owns the protocol; the passes that write the graphs and the front end that writes the manifest import
these names, and every runtime reads them back from ``manifest.json`` (the manifest carries each one, so a runtime in
another language needs only ``manifest.schema.json`` and the README's "Runtime protocol"). Templates contain
``{layer}``; ``layer_names`` expands them.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
SCHEMA = "manifest.schema.json"  # shipped beside this module
FORMAT = "glass-onnx"
FORMAT_VERSION = 3  # bump on any change a reader of an older version would misread

# -- files the compiler writes (the manifest names the graphs; a runtime opens them from there) ----------------
DENSE_GRAPH, DENSE_WEIGHTS = "model.onnx", "model.onnx.data"
PREFILL_GRAPH, DECODE_GRAPH, WEIGHTS = "prefill.onnx", "decode.onnx", "weights.bin"
FAST_DECODER_GRAPH, SELECT_GRAPH, COMPACT_GRAPH = "decoder.onnx", "select.onnx", "compact.onnx"
GENAI_PREFILL_GRAPH, GENAI_DECODE_GRAPH, GENAI_CONFIG = "prefill_genai.onnx", "decode_genai.onnx", "genai_config.json"
TOKENIZER_JSON, TOKENIZER_CONFIG, CHAT_TEMPLATE = "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"
TOKENIZER_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, CHAT_TEMPLATE)
PRIOR_FILE = "prior.npz"  # provenance: the prior's values and ranks

# -- the decoder's inputs and outputs (manifest "io"): the onnxruntime-genai / optimum convention -------------
INPUT_IDS = "input_ids"  # int64 [batch, sequence]
ATTENTION_MASK = "attention_mask"  # int64 [batch, past + sequence], 1 = real token, 0 = left padding
POSITION_IDS = "position_ids"  # int64 [batch, sequence]; absent when attention rotates by cache slot
PAST_KEY, PAST_VALUE = "past_key_values.{layer}.key", "past_key_values.{layer}.value"
PRESENT_KEY, PRESENT_VALUE = "present.{layer}.key", "present.{layer}.value"
LOGITS = "logits"  # [batch, sequence, vocab]
HIDDEN = "hidden_states"  # [batch, sequence, H]: the final hidden states, where a layout runs the LM head apart
KV_LAYOUT = ("batch", "kv_heads", "sequence", "head_dim")

# -- GLASS state (manifest "glass") ----------------------------------------------------------------------------
PAST_NEURON_STATS = "past_neuron_stats.{layer}"  # float32 [batch, I], zeros before the first prompt chunk
PRESENT_NEURON_STATS = "present_neuron_stats.{layer}"
KEPT_NEURONS = "kept_neurons.{layer}"  # int64 [batch, k], ascending neuron ids: prefill output, decode input
PRIOR_RANK = "glass.prior_rank"  # float32 [layers, I] ranks of the global prior, 0 = most important
LAM = "glass.lam"  # float32 scalar: weight of the prompt's ranking
KEEP = "glass.k"  # int64 [layers]: neurons kept in each layer

# -- the fast layout (manifest "fast") --------------------------------------------------------------------------
FFN_GATE_UP = "ffn.{layer}.gate_up"  # decoder input [ffn_batch, 2k / w, H, w]: gate panels, then up panels
FFN_DOWN = "ffn.{layer}.down"  # decoder input [ffn_batch, H / h, k, h]
FFN_Z = "ffn.{layer}.z"  # decoder output [batch, sequence, I]: act(gate) * up on the constant path
TOKEN_MASK = "token_mask"  # select input [batch, sequence]: the attention mask's columns of this chunk
# compact.onnx, one layer: the full weights and the kept neurons in, the compact panels out
COMPACT_FULL_GATE_UP, COMPACT_FULL_DOWN = "ffn_full.gate_up", "ffn_full.down"  # [2I, H], [I, H]
COMPACT_KEPT = "kept_neurons"  # [batch, k]
COMPACT_PANEL_WIDTH = "glass.panel_width"  # int64 [1]: w, see panel_width
COMPACT_HIDDEN_PANEL_WIDTH = "glass.hidden_panel_width"  # int64 [1]: h (default: the manifest's hidden_panel_width)
COMPACT_GATE_UP, COMPACT_DOWN = "ffn.gate_up", "ffn.down"
FULL_GATE_UP_T = "glass.ffn_full.{layer}.gate_up"  # where a layer's [2I, H] gate + up lie in the weights file
WIDEST_PANEL = 32

# -- the int4 fast layout (manifest "fast", kind compact_session): a decode session per prompt ---------------------
COMPACT_DECODER_GRAPH = "decode_compact.onnx"
HEAD_GRAPH = "head.onnx"  # the LM head alone (hidden_states -> logits): prepacked once, not per prompt
FFN_MASK = "ffn.{layer}.mask"  # decoder input [mask_batch, I]: 1 for a kept neuron (ones in prefill)
PER_PROMPT = "per-prompt"  # the external-data location of initializers a runtime supplies when it creates the session
# the per-prompt decode session's compact FFN weights, MatMulNBits' 4-bit B and scales of the kept blocks only
COMPACT_INT4 = {f"{part}_{what}": f"ffn.{{layer}}.{part}.{what}" for part in ("gate_up", "down")
                for what in ("q", "scales")}

# -- onnxruntime-genai's decoder-pipeline (compile --genai) ------------------------------------------------------
GENAI_KEPT_STATE = "kept_neurons_state.{layer}"  # genai value-store key the kept sets live under
GENAI_KEPT_NEXT = "kept_neurons_next.{layer}"  # decode output forwarded back to that key


def layer_names(template: str, num_layers: int) -> list[str]:
    """Expand an I/O name template such as ``past_key_values.{layer}.key`` for every layer."""
    return [template.format(layer=i) for i in range(num_layers)]


def panel_width(size: int, widest: int = WIDEST_PANEL) -> int:
    """The widest power of two up to ``widest`` that divides ``size``: the fast layout's narrow panel width for k
    kept neurons (gate/up) and for the hidden size (down); the runtime times it against one panel per projection on
    each host (panel_trial.py)."""
    width = widest
    while size % width:
        width //= 2
    return width


def io_section(position_ids: bool) -> dict:
    """The manifest's ``io``: the decoder's input and output names (``position_ids`` None when not an input)."""
    return {
        "input_ids": INPUT_IDS,
        "attention_mask": ATTENTION_MASK,
        "position_ids": POSITION_IDS if position_ids else None,
        "past_key": PAST_KEY,
        "past_value": PAST_VALUE,
        "present_key": PRESENT_KEY,
        "present_value": PRESENT_VALUE,
        "logits": LOGITS,
        "kv_layout": list(KV_LAYOUT),
        "kv_dtype": "float32",
    }


def glass_io_sections(intermediate_size: int) -> dict:
    """The manifest's ``glass.state``, ``glass.handoff`` (layer l's width: ``glass.k_per_layer[l]``) and
    ``glass.overridable``."""
    return {
        "state": {"input": PAST_NEURON_STATS, "output": PRESENT_NEURON_STATS, "shape": ["batch", intermediate_size],
                  "dtype": "float32", "initial": 0.0},
        "handoff": {"output": KEPT_NEURONS, "input": KEPT_NEURONS, "shape": ["batch", "k_per_layer[layer]"],
                    "dtype": "int64"},
        "overridable": {"prior_rank": PRIOR_RANK, "lam": LAM, "k": KEEP},
    }


def compact_session_io_section() -> dict:
    """The int4 fast layout's ``fast.io``: the decoder's FFN activations and masks, the final hidden states the
    decoders hand to the head, select's token mask, and the per-prompt decode session's compact weights."""
    return {"ffn_z": FFN_Z, "ffn_mask": FFN_MASK, "hidden": HIDDEN, "token_mask": TOKEN_MASK,
            "compact": dict(COMPACT_INT4)}


def fast_io_section() -> dict:
    """The manifest's ``fast.io``: the fast decoder's compact inputs and activations, select's token mask, and
    compact.onnx's names."""
    return {
        "ffn_gate_up": FFN_GATE_UP, "ffn_down": FFN_DOWN, "ffn_z": FFN_Z, "token_mask": TOKEN_MASK,
        "compact": {"full_gate_up": COMPACT_FULL_GATE_UP, "full_down": COMPACT_FULL_DOWN, "kept": COMPACT_KEPT,
                    "panel_width": COMPACT_PANEL_WIDTH, "hidden_panel_width": COMPACT_HIDDEN_PANEL_WIDTH,
                    "gate_up": COMPACT_GATE_UP, "down": COMPACT_DOWN},
    }
