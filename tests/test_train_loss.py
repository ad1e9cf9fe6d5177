"""The Diffusion-DPO loss against an independent computation, and its invariants."""

import math

import numpy as np
import pytest
import torch

from agfsync.train.loss import diffusion_dpo_loss, sft_loss


def _random_batch(seed: int, batch: int = 4, shape: tuple[int, ...] = (4, 3, 5)):
    """Six float64 tensors, so the comparison with numpy is not limited by float32."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, *shape, generator=generator, dtype=torch.float64) for _ in range(6)]


def _numpy_dpo(arrays: list[np.ndarray], beta: float) -> tuple[float, np.ndarray]:
    """Written from the paper's eq. 14 with the official 0.5 factor, in float64 loops."""
    model_w, model_l, ref_w, ref_l, target_w, target_l = arrays
    insides = []
    for i in range(model_w.shape[0]):
        policy_gap = np.mean((model_w[i] - target_w[i]) ** 2) - np.mean(
            (model_l[i] - target_l[i]) ** 2
        )
        reference_gap = np.mean((ref_w[i] - target_w[i]) ** 2) - np.mean(
            (ref_l[i] - target_l[i]) ** 2
        )
        insides.append(-0.5 * beta * (policy_gap - reference_gap))
    inside = np.array(insides)
    # -log(sigmoid(x)) = log(1 + exp(-x)), per pair, then averaged.
    return float(np.mean(np.logaddexp(0.0, -inside))), inside


def test_loss_is_ln2_when_policy_equals_reference() -> None:
    model_w, model_l, _, _, target_w, target_l = _random_batch(0)
    output = diffusion_dpo_loss(
        model_w, model_l, model_w.clone(), model_l.clone(), target_w, target_l, beta=5000.0
    )
    assert abs(output.loss.item() - math.log(2)) < 1e-6
    assert output.reward_margin.item() == 0.0
    assert output.implicit_accuracy.item() == 0.0


@pytest.mark.parametrize("beta", [1.0, 50.0, 5000.0])
def test_loss_matches_independent_computation(beta: float) -> None:
    # The reference is the policy moved towards the target on the winners of pairs 0-1 and
    # the losers of pairs 2-3, by a step scaled with 1/beta: `inside` has both signs and
    # stays where log-sigmoid is neither saturated nor flat.
    model_w, model_l, _, _, target_w, target_l = _random_batch(1)
    step = (1.0 / beta) * torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)[:, None, None]
    ref_w = model_w + step[..., None] * (target_w - model_w)
    ref_l = model_l + step.flip(0)[..., None] * (target_l - model_l)
    arrays = [t.numpy() for t in (model_w, model_l, ref_w, ref_l, target_w, target_l)]
    expected_loss, expected_inside = _numpy_dpo(arrays, beta=beta)
    assert np.any(expected_inside > 0) and np.any(expected_inside < 0)

    output = diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, target_w, target_l, beta=beta)

    np.testing.assert_allclose(output.inside.numpy(), expected_inside, rtol=1e-9)
    assert output.loss.item() == pytest.approx(expected_loss, rel=1e-9)
    assert output.implicit_accuracy.item() == pytest.approx(float(np.mean(expected_inside > 0)))
    assert output.reward_margin.item() == pytest.approx(float(np.mean(expected_inside)), rel=1e-9)
    assert output.mse_w.item() == pytest.approx(float(np.mean((arrays[0] - arrays[4]) ** 2)))
    assert output.ref_mse_l.item() == pytest.approx(float(np.mean((arrays[3] - arrays[5]) ** 2)))


def test_loss_averages_logsigmoid_per_pair_not_of_the_mean() -> None:
    # One pair strongly right, one strongly wrong: the mean of `inside` is 0 (loss ln 2 if
    # averaged first), the mean of the per-pair losses is about 50.
    target = torch.zeros(2, 1)
    model_w = torch.tensor([[0.0], [1.0]])
    model_l = torch.tensor([[1.0], [0.0]])
    output = diffusion_dpo_loss(
        model_w, model_l, torch.zeros(2, 1), torch.zeros(2, 1), target, target, beta=200.0
    )
    np.testing.assert_allclose(output.inside.numpy(), [100.0, -100.0])
    assert output.loss.item() == pytest.approx(50.0, rel=1e-9)


def test_swapping_winner_and_loser_flips_the_sign_of_inside() -> None:
    model_w, model_l, noise_w, noise_l, target_w, target_l = _random_batch(2)
    ref_w, ref_l = model_w + 0.1 * noise_w, model_l + 0.1 * noise_l
    forward = diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, target_w, target_l, beta=10.0)
    swapped = diffusion_dpo_loss(model_l, model_w, ref_l, ref_w, target_l, target_w, beta=10.0)
    assert (forward.inside != 0).all()
    torch.testing.assert_close(swapped.inside, -forward.inside)
    assert forward.implicit_accuracy.item() + swapped.implicit_accuracy.item() == pytest.approx(1)


def test_gradient_flows_to_the_policy_only() -> None:
    model_w, model_l, ref_w, ref_l, target_w, target_l = _random_batch(3)
    model_w.requires_grad_(True)
    ref_w.requires_grad_(True)
    diffusion_dpo_loss(model_w, model_l, ref_w, ref_l, target_w, target_l, beta=1.0).loss.backward()
    assert model_w.grad is not None and model_w.grad.abs().sum() > 0
    assert ref_w.grad is None


def test_sft_loss_is_the_winners_mse() -> None:
    model_w, _, _, _, target_w, _ = _random_batch(4)
    expected = np.mean((model_w.numpy() - target_w.numpy()) ** 2)
    assert sft_loss(model_w, target_w).item() == pytest.approx(expected, rel=1e-6)
