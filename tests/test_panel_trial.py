"""The fp32 fast layout's panel width trial (runtime/panel_trial.py): it times each gate/up panel width on real
decode steps, keeps the faster, and never changes a logit."""

import numpy as np
import pytest

from glass_onnx.runtime import GlassError, open_decoder
from glass_onnx.runtime.panel_trial import PanelWidthTrial
from glass_onnx.runtime.protocol import panel_width

PROMPT = np.array([[5, 17, 42, 99, 7, 250, 311, 12, 64, 128, 3, 77, 200, 31]])
TOKENS = [3, 99, 250, 7, 12, 64, 5, 31, 200]


def test_the_trial_times_each_width_then_keeps_the_faster():
    trial = PanelWidthTrial(steps=2)
    assert (trial.current, trial.choice, trial.steps_left, trial.width(96)) == ("narrow", None, 6, 32)
    # the first step after each gather is not timed
    assert [trial.record(t) for t in (9.0, 3.0, 3.0)] == [False, False, True]
    assert (trial.current, trial.steps_left, trial.width(96)) == ("whole", 3, 96)
    assert [trial.record(t) for t in (9.0, 2.0, 3.0)] == [False, False, False]  # median 2.5 < 3: stays
    assert (trial.choice, trial.steps_left) == ("whole", 0)

    slower = PanelWidthTrial(steps=2)
    assert [slower.record(t) for t in (1.0, 3.0, 3.0, 1.0, 4.0, 5.0)] == [False, False, True, False, False, True]
    assert (slower.choice, slower.current) == ("narrow", "narrow")  # back to narrow: gather again


def test_a_fixed_width_skips_the_trial_and_an_unknown_one_is_refused():
    assert (PanelWidthTrial(fixed="whole").choice, PanelWidthTrial(fixed="whole").steps_left) == ("whole", 0)
    with pytest.raises(GlassError, match="unknown panel width 'wide'; choose narrow or whole"):
        PanelWidthTrial(fixed="wide")


@pytest.mark.parametrize("budget", ["uniform", "32,64,48"])
def test_every_panel_width_decodes_the_same_logits(tiny_compiled, budget):
    artifact = tiny_compiled(method="a-glass", sparsity=0.5, budget=budget)
    logits, decoders = {}, {}
    for fixed in ("narrow", "whole", None):
        decoder = decoders[fixed] = open_decoder(artifact, layout="fast")
        decoder.panels = PanelWidthTrial(steps=2, fixed=fixed)
        state = decoder.new_state()
        decoder.prefill(state, PROMPT)
        logits[fixed] = np.concatenate([decoder.decode(state, np.array([[t]])) for t in TOKENS], axis=1)
        k = [kept.shape[-1] for kept in decoder.kept_neurons(state)]
        shapes = [[state.plan.inputs[f"ffn.{layer}.{part}"].shape() for part in ("gate_up", "down")]
                  for layer in range(len(k))]
        assert state.plan.variant == decoder.panels.current
        h = hidden = decoder.model["hidden_size"]
        # narrow: panels of up to 32 neurons or hidden units; whole: one panel each for gate, up and down
        if state.plan.variant == "narrow":
            h = panel_width(hidden)
            assert h < hidden  # so the two forms differ
        assert shapes == [[[1, 2 * n // panel_width(n), hidden, panel_width(n)], [1, hidden // h, n, h]]
                          if state.plan.variant == "narrow" else [[1, 2, hidden, n], [1, 1, n, hidden]] for n in k]
    trial = decoders[None].panels
    assert trial.choice in ("narrow", "whole") and decoders[None].steps_to_settle == 0
    assert all(len(times) == 3 for times in trial.times.values())
    for fixed in ("whole", None):
        assert np.abs(logits[fixed] - logits["narrow"]).max() < 1e-5


def test_an_artifact_whose_compact_graph_fixes_h_keeps_it(tiny_compiled):
    """Artifacts compiled before the hidden panel width became an input of compact.onnx: down keeps its compiled h."""
    artifact = tiny_compiled(method="a-glass", sparsity=0.5)
    logits = {}
    for fixed in ("narrow", "whole"):
        decoder = open_decoder(artifact, layout="fast")
        decoder.panels, decoder.hidden_width_input = PanelWidthTrial(fixed=fixed), None
        state = decoder.new_state()
        decoder.prefill(state, PROMPT)
        logits[fixed] = np.concatenate([decoder.decode(state, np.array([[t]])) for t in TOKENS[:3]], axis=1)
        h = decoder.manifest["fast"]["hidden_panel_width"]
        assert state.plan.inputs["ffn.0.down"].shape()[-1] == h < decoder.model["hidden_size"]
    assert np.abs(logits["whole"] - logits["narrow"]).max() < 1e-5
