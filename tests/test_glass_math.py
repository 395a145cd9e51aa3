"""The numpy GLASS math (passes/glass_math.py) on known answers, and the compiler's torch prior against it."""

import numpy as np
import pytest
import torch

from glass_onnx.passes import glass_math


def test_ranks_put_the_largest_first_and_break_ties_by_index():
    np.testing.assert_array_equal(glass_math.ranks(np.array([3.0, 1.0, 3.0, 2.0])), [0, 3, 1, 2])
    np.testing.assert_array_equal(glass_math.ranks(np.array([[1, 2], [2, 1]])), [[1, 0], [0, 1]])


def test_local_statistic_known_answer_and_padding():
    z = np.array([[[3.0, 4.0], [1.0, 0.0]]], np.float32)  # one sequence, two tokens
    np.testing.assert_allclose(glass_math.local_statistic(z), [[9 / 25 + 1, 16 / 25]], rtol=1e-6)
    np.testing.assert_allclose(glass_math.local_statistic(z, np.array([[0.0, 1.0]], np.float32)), [[1, 0]])


def test_rank_fusion_at_the_ends_is_griffin_or_the_static_prior():
    stats = np.array([0.1, 0.9, 0.5, 0.7, 0.2], np.float32)
    prior_rank = np.array([0, 1, 2, 3, 4], np.float32)
    np.testing.assert_array_equal(glass_math.fuse_rank(stats, prior_rank, 1.0, 2), [1, 3])  # the prompt alone
    np.testing.assert_array_equal(glass_math.fuse_rank(stats, prior_rank, 0.0, 2), [0, 1])  # the prior alone
    # lam 0.5: f = (r_local + r_prior) / 2 = [2, 0.5, 2, 2, 3.5]; ties at 2 go to the better local rank (neuron 3)
    np.testing.assert_array_equal(glass_math.fuse_rank(stats, prior_rank, 0.5, 2), [1, 3])


def test_plackett_luce_worths_follow_a_single_ranking():
    ranking = np.array([2, 0, 3, 1], np.float32)  # neuron 1 first, then 3, 0, 2
    worth = glass_math.plackett_luce_worths([ranking, ranking[::-1].copy()], [1.0, 0.0])
    assert list(np.argsort(-worth)) == [1, 3, 0, 2]
    np.testing.assert_array_equal(glass_math.fuse_plackett_luce(-ranking, np.zeros(4), 1.0, 2), [1, 3])


def test_priors_known_answer():
    z = np.array([[[1.0, -2.0], [3.0, 0.5], [9.0, 9.0]]])
    grad = np.array([[[0.5, 1.0], [-1.0, 2.0], [1.0, 1.0]]])
    mask = np.array([[1.0, 1.0, 0.0]])  # the third token is padding
    np.testing.assert_allclose(glass_math.activation_prior(z, mask), [2.0, 1.25])
    np.testing.assert_allclose(glass_math.impact_prior(z, grad, mask), [1.75, 1.5])


@pytest.mark.parametrize("kind", ["activation", "impact"])
def test_torch_prior_equals_the_formula(tiny_model, kind):
    from glass_onnx.compiler.priors import down_proj_modules, neuron_importance

    torch.manual_seed(0)
    ids = torch.randint(3, 400, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # an early end
    got = neuron_importance(tiny_model, ids, mask, kind)
    captured = []

    def keep(_module, args):
        args[0].retain_grad()
        captured.append(args[0])

    hooks = [m.register_forward_pre_hook(keep) for m in down_proj_modules(tiny_model)]
    try:
        logits = tiny_model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                 reduction="none")
        loss_mask = mask[:, 1:].reshape(-1).float()
        ((loss * loss_mask).sum() / loss_mask.sum()).backward()
    finally:
        for h in hooks:
            h.remove()
        tiny_model.zero_grad(set_to_none=True)
    m = mask.numpy().astype(np.float64)
    for layer, z in enumerate(captured):
        zs = z.detach().numpy().astype(np.float64)
        want = glass_math.activation_prior(zs, m) if kind == "activation" else \
            glass_math.impact_prior(zs, z.grad.numpy().astype(np.float64), m)
        np.testing.assert_allclose(got[layer], want, rtol=1e-4, atol=1e-9)
