"""The fast session layout of a compiled artifact: one decoder session serves prefill and decode.

The decoder graph takes each FFN's weights as inputs. Prefill binds the full weights (laid out for it at compile
time, read once from the weights file and held once); ``select.onnx`` turns the FFN activations into the running
neuron statistics and the kept neurons; before the first decode step ``compact.onnx`` gathers the kept neurons'
weights once, in panels (passes/ffn_inputs.py says why), and every decode step binds those. ONNX Runtime prepacks
only the constant attention and lm_head weights, once, so decode reads only the compact FFN weights.
"""

from __future__ import annotations

import math

import numpy as np

from glass_onnx.runtime.decoder import Decoder, SequenceState, create_session
from glass_onnx.runtime.errors import GlassError
from glass_onnx.runtime.manifest import layer_names


def panel_width(size: int, widest: int = 32) -> int:
    """The widest power of two up to ``widest`` that divides ``size``: panels of 32 stream best (BENCHMARKS.md)."""
    width = widest
    while size % width:
        width //= 2
    return width


class FastDecoder(Decoder):
    """Decoder over the artifact's ``fast`` layout; same calls and results as the reference layout."""

    def _open_sessions(self, threads: int | None) -> None:
        fast = self.manifest["fast"]
        io, n = fast["io"], self.model["num_layers"]
        if "ffn_gate_up" not in io:
            raise GlassError(f"'{self.directory}' has a fast layout from an older glass-onnx; compile it again")
        self.decoder_session = create_session(self.directory / fast["decoder"], self.provider, threads)
        self.select_session = create_session(self.directory / fast["select"], self.provider, threads)
        # one thread: the gathers are memory copies, which two threads made slower (26 -> 55 ms per prompt on 2
        # cores, BENCHMARKS.md)
        self.compact_session = create_session(self.directory / fast["compact"], self.provider, 1)
        self.prefill_session = self.decode_session = self.decoder_session
        self.ffn_inputs = [layer_names(io[part], n) for part in ("ffn_gate_up", "ffn_down")]
        self.ffn_t_inputs = [layer_names(io["ffn_gate_up_t"], n)]
        self.full_inputs = [layer_names(io[part], n) for part in ("full_gate_up", "full_down")]
        self.ffn_z = layer_names(io["ffn_z"], n)
        self.token_mask = io["token_mask"]
        self.panel_width = io["panel_width"]
        self._check_fast_sessions()
        # per layer: gate and up transposed [2I, H], down in panels [H / h, I, h], read once into process memory:
        # page-aligned views of a memory map ran the 32-token prefill ~12 ms slower (BENCHMARKS.md)
        path = self.directory / fast["weights"]
        full = [[np.fromfile(path, np.float32, count=math.prod(entry[p]["shape"]), offset=entry[p]["offset"])
                 .reshape(entry[p]["shape"]) for p in ("gate_up", "down")] for entry in fast["ffn_weights"]]
        self.full_values = [[self._value(w) for w in layer] for layer in full]
        hidden = self.model["hidden_size"]
        # the unused gate/up path of each call gets width 0 (passes/ffn_inputs.py)
        no_panels = self._value(np.zeros([1, 0, hidden, 1], np.float32))
        no_rows = self._value(np.zeros([0, hidden], np.float32))
        self.prefill_ffn = {**self._by_name(self.ffn_t_inputs, [[layer[0]] for layer in self.full_values]),
                            **self._by_name(self.ffn_inputs, [[no_panels, self._value(layer[1][None])]
                                                              for layer in full])}
        self.decode_ffn_t = self._by_name(self.ffn_t_inputs, [[no_rows]] * n)

    @staticmethod
    def _by_name(names_by_part: list[list[str]], values_by_layer: list[list]) -> dict:
        """{input name: value} from names [part][layer] and values [layer][part]."""
        return {name: value for names, values in zip(names_by_part, zip(*values_by_layer))
                for name, value in zip(names, values)}

    def _check_fast_sessions(self) -> None:
        """Refuse graphs that do not fit together (e.g. copied from two artifacts)."""
        needs = (
            (self.decoder_session.get_inputs, [n for names in self.ffn_inputs + self.ffn_t_inputs for n in names]
             + self.past_names, "decoder inputs"),
            (self.decoder_session.get_outputs, self.ffn_z + self.present_names, "decoder outputs"),
            (self.select_session.get_outputs, self.state_out + self.handoff_out, "select outputs"),
            (self.compact_session.get_inputs, [n for names in self.full_inputs for n in names] + self.handoff_out,
             "compact inputs"),
        )
        for listing, names, what in needs:
            if missing := sorted(set(names) - {v.name for v in listing()})[:3]:
                raise GlassError(f"the fast layout's {what} lack {missing}; the artifact's sessions are mismatched, compile again")

    def prefill(self, state: SequenceState, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                overrides: dict | None = None) -> np.ndarray:
        mask = np.ones_like(input_ids) if attention_mask is None else attention_mask
        logits, z = self._step(self.decoder_session, state, input_ids, mask, self.prefill_ffn, self.ffn_z)
        binding = self.select_session.io_binding()
        for name, value in [*zip(self.ffn_z, z), *zip(self.state_in, state.neuron_stats),
                            *self._overrides(overrides).items()]:
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_input(self.token_mask, self._value(mask.astype(np.int64)))
        for name in self.state_out + self.handoff_out:
            binding.bind_output(name, self.device)
        self.select_session.run_with_iobinding(binding)
        values = binding.get_outputs()
        state.neuron_stats, state.kept = values[: len(self.state_out)], values[len(self.state_out) :]
        state.compact = None  # the kept sets may have changed
        return logits

    def _decode_inputs(self, state: SequenceState) -> dict:
        """The kept neurons' weights, gathered once per prompt in panels, plus the empty prefill path."""
        binding = self.compact_session.io_binding()
        for name, value in [*self._by_name(self.full_inputs, self.full_values).items(),
                            *zip(self.handoff_out, state.kept)]:
            binding.bind_ortvalue_input(name, value)
        kept = state.kept[0].shape()[-1]
        binding.bind_ortvalue_input(self.panel_width, self._value(np.array([panel_width(kept)], np.int64)))
        outputs = [name for names in self.ffn_inputs for name in names]
        for name in outputs:
            binding.bind_output(name, self.device)
        self.compact_session.run_with_iobinding(binding)
        return {**dict(zip(outputs, binding.get_outputs())), **self.decode_ffn_t}
