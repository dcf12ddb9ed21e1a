"""What a denoising network predicts (its parameterisation) and the conversions between the three in use.

With alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t) and x_t = alpha x0 + sigma eps:
- "epsilon": the noise eps (Ho et al. 2020, eq. 14); x0 = (x_t - sigma eps) / alpha;
- "sample": x0 itself; eps = (x_t - alpha x0) / sigma;
- "v_prediction": v = alpha eps - sigma x0 (Salimans & Ho 2022, "Progressive distillation", sec. 4 and appendix D);
  x0 = alpha x_t - sigma v, eps = alpha v + sigma x_t.
The names are MONAI's (`DDPMPredictionType`), so a checkpoint's "prediction_type" means the same in both.
"""

from __future__ import annotations

import torch

from ..errors import CheckpointError

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def check_prediction_type(prediction_type: str) -> str:
    """The prediction type if it is one of PREDICTION_TYPES; CheckpointError otherwise."""
    if prediction_type not in PREDICTION_TYPES:
        raise CheckpointError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")
    return prediction_type


def x0_and_noise(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean image x0 and the noise eps that a network output implies at x_t (both shaped like x_t).

    output, x_t: (B, C, *spatial); alpha_bar: abar_t, 0-dim or broadcastable to x_t (B, 1, ...). The x0 returned is
    not clipped: clipping is the sampler's choice.
    """
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "epsilon":
        return (x_t - sigma * output) / alpha, output
    if prediction_type == "sample":
        return output, (x_t - alpha * output) / sigma
    if prediction_type == "v_prediction":
        return alpha * x_t - sigma * output, alpha * output + sigma * x_t
    raise CheckpointError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")


def prediction_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
                      ) -> torch.Tensor:
    """What the network should output for x_t = sqrt(abar) x0 + sqrt(1 - abar) noise: noise, x0 or v.

    x0, noise: (B, C, *spatial); alpha_bar: broadcastable to them (B, 1, ...)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    raise CheckpointError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")
