"""The Diffusion-DPO objective (Wallace et al. 2023, eq. 14) and its SFT baseline.

For a pair noised with the same noise at the same timestep, each model's
denoising error on the preferred (w) and rejected (l) image is compared:

    inside = -0.5 * beta * ((mse_w - mse_l) - (ref_mse_w - ref_mse_l))
    loss   = mean over pairs of -log sigmoid(inside)

The 0.5 is the official code's convention (beta 5000 with it equals 2500
without). Two pitfalls are held here: the log-sigmoid is taken per pair and then
averaged (not of the averaged `inside`), and the errors are per-sample means over
every dimension but the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DPOLossOutput:
    """The loss and what to log beside it (all but `loss` are detached)."""

    loss: torch.Tensor
    inside: torch.Tensor
    """Per pair: positive when the policy prefers the winner more than the reference does."""
    implicit_accuracy: torch.Tensor
    """Share of pairs with inside > 0."""
    reward_margin: torch.Tensor
    """Mean of `inside`: the implicit reward of the winner minus that of the loser."""
    mse_w: torch.Tensor
    mse_l: torch.Tensor
    ref_mse_w: torch.Tensor
    ref_mse_l: torch.Tensor
    """Mean denoising errors; logged so that drift of both policy errors at large beta
    (the loss falls while the winner's error rises) is visible."""

    def metrics(self) -> dict[str, float]:
        return {
            "loss": self.loss.item(),
            "implicit_accuracy": self.implicit_accuracy.item(),
            "reward_margin": self.reward_margin.item(),
            "mse_w": self.mse_w.item(),
            "mse_l": self.mse_l.item(),
            "ref_mse_w": self.ref_mse_w.item(),
            "ref_mse_l": self.ref_mse_l.item(),
        }


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every dimension but the first, in at least float32
    (half-precision errors of near-equal predictions would cancel to noise)."""
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    error = (prediction.to(dtype) - target.to(dtype)).pow(2)
    return error.mean(dim=tuple(range(1, error.ndim)))


def diffusion_dpo_loss(
    model_pred_w: torch.Tensor,
    model_pred_l: torch.Tensor,
    ref_pred_w: torch.Tensor,
    ref_pred_l: torch.Tensor,
    target_w: torch.Tensor,
    target_l: torch.Tensor,
    beta: float,
) -> DPOLossOutput:
    """Diffusion-DPO loss of a batch of pairs (predictions and targets: batch first)."""
    mse_w = per_sample_mse(model_pred_w, target_w)
    mse_l = per_sample_mse(model_pred_l, target_l)
    with torch.no_grad():
        ref_mse_w = per_sample_mse(ref_pred_w, target_w)
        ref_mse_l = per_sample_mse(ref_pred_l, target_l)
    inside = -0.5 * beta * ((mse_w - mse_l) - (ref_mse_w - ref_mse_l))
    loss = -F.logsigmoid(inside).mean()
    detached = inside.detach()
    return DPOLossOutput(
        loss=loss,
        inside=detached,
        implicit_accuracy=(detached > 0).float().mean(),
        reward_margin=detached.mean(),
        mse_w=mse_w.detach().mean(),
        mse_l=mse_l.detach().mean(),
        ref_mse_w=ref_mse_w.mean(),
        ref_mse_l=ref_mse_l.mean(),
    )


def sft_loss(model_pred_w: torch.Tensor, target_w: torch.Tensor) -> torch.Tensor:
    """The baseline: ordinary denoising loss on the preferred images only."""
    return per_sample_mse(model_pred_w, target_w).mean()
