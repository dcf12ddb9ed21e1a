"""Conditions of a denoising network, classifier-free guidance with one scale per condition, and condition dropout.

A condition reaches the network in one of two ways:
- "concat": an image (B, C_i, *spatial) concatenated to x_t on the channel axis (Saharia et al. 2022, SR3; paper 002);
  several are concatenated in their declared order after x_t;
- "context": a token sequence (B, tokens, dim) for cross-attention, MONAI `DiffusionModelUNet(with_conditioning=True,
  cross_attention_dim=dim)` taking it as `context=` (Rombach et al. 2022, LDM, sec. 3.3); several are concatenated
  along the token axis.

Classifier-free guidance (Ho & Salimans 2022) with one scale s_i per guided condition, in the compositional form of
Liu et al. 2022 ("Compositional Visual Generation with Composable Diffusion Models", ECCV; the conjunction operator):

    out = out(null) + sum_i s_i (out(c_i) - out(null))

out(null) has every guided condition replaced by its null value; out(c_i) gives condition i and nulls the other guided
ones; conditions without a null value are given in every pass. One condition at scale s is the usual CFG with
w = s - 1; a scale of 0 removes that condition's pass, so its input has no influence at all. The combination is
affine with weights summing to 1, so combining network outputs equals combining the noise they imply, for epsilon,
x0 and v prediction alike. All passes run as one batch through the network.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch

from ..errors import InputError

CONDITION_KINDS = ("concat", "context")


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity: a tensor null has no single truth value
class Condition:
    """One input a denoising network is conditioned on.

    name: the key of its value in a conditions mapping. kind: "concat" or "context" (module docstring).
    null: the value meaning "no condition", broadcastable to the condition's value (a float such as 0.0, or a tensor:
    a declared null image or null token embedding); None for a condition that is always given: it can be neither
    dropped in training nor guided.
    """

    name: str
    kind: str
    null: float | torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONDITION_KINDS:
            raise InputError(f"condition {self.name!r}: kind must be one of {CONDITION_KINDS}; got {self.kind!r}")

    def null_like(self, value: torch.Tensor) -> torch.Tensor:
        """The null value broadcast to `value`'s shape, dtype and device (InputError without a null value)."""
        if self.null is None:
            raise InputError(f"condition {self.name!r} has no null value: it cannot be dropped or guided")
        return torch.as_tensor(self.null, dtype=value.dtype, device=value.device).expand_as(value)


def check_conditions(conditions: Sequence[Condition], values: Mapping[str, torch.Tensor]) -> None:
    """Every declared condition has a value and every value a declared condition (InputError naming them)."""
    declared = [condition.name for condition in conditions]
    missing, unknown = set(declared) - set(values), set(values) - set(declared)
    if missing or unknown:
        raise InputError(f"conditions given {sorted(values)} do not match those declared {declared}")


def network_inputs(conditions: Sequence[Condition], x_t: torch.Tensor, values: Mapping[str, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The network's input (x_t with the concat conditions on the channel axis) and its cross-attention context
    (the context conditions on the token axis, or None when there are none)."""
    concat = [values[c.name] for c in conditions if c.kind == "concat"]
    context = [values[c.name] for c in conditions if c.kind == "context"]
    inputs = torch.cat([x_t, *concat], dim=1) if concat else x_t
    return inputs, (torch.cat(context, dim=1) if context else None)


def guidance_passes(conditions: Sequence[Condition], values: Mapping[str, torch.Tensor],
                    guidance: Mapping[str, float] | None) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """The condition values of each network pass and the scale s_i of each pass after the first.

    guidance None: one pass with every condition given (no guidance) and no scales. Otherwise `guidance` names a
    scale for each condition that has a null value (and only those): the first pass is the null pass, then one pass
    per condition whose scale is not 0 (module docstring). InputError for a missing, unknown or non-finite scale.
    """
    if guidance is None:
        return [dict(values)], []
    guided = [c for c in conditions if c.null is not None]
    names = {c.name for c in guided}
    if set(guidance) != names:
        raise InputError(f"guidance needs one scale for each condition with a null value {sorted(names)}; "
                         f"got scales for {sorted(guidance)}")
    bad = {name: scale for name, scale in guidance.items() if not math.isfinite(float(scale))}
    if bad:
        raise InputError(f"guidance scales must be finite numbers; got {bad}")
    null = {**values, **{c.name: c.null_like(values[c.name]) for c in guided}}
    passes, scales = [null], []
    for condition in guided:
        scale = float(guidance[condition.name])
        if scale != 0.0:
            passes.append({**null, condition.name: values[condition.name]})
            scales.append(scale)
    return passes, scales


def combine_guided(outputs: Sequence[torch.Tensor], scales: Sequence[float]) -> torch.Tensor:
    """out(null) + sum_i s_i (out(c_i) - out(null)) for outputs [out(null), out(c_1), ...] (module docstring);
    the only output unchanged when there are no scales."""
    null, *conditioned = outputs
    guided = null
    for output, scale in zip(conditioned, scales, strict=True):
        guided = guided + scale * (output - null)
    return guided


def drop_conditions(conditions: Sequence[Condition], values: Mapping[str, torch.Tensor],
                    probabilities: Mapping[str, float], generator: torch.Generator | None = None
                    ) -> dict[str, torch.Tensor]:
    """Condition dropout for classifier-free guidance training (Ho & Salimans 2022, algorithm 1): each image of the
    batch independently has condition i replaced by its null value with probability probabilities[i].

    values: (B, ...) per condition. Conditions not named keep their values; one uniform draw of B values per named
    condition with a non-zero probability, in declared order, from `generator`. InputError for an unknown name, a
    probability outside [0, 1] or a condition without a null value.
    """
    declared = {c.name: c for c in conditions}
    unknown = set(probabilities) - set(declared)
    if unknown:
        raise InputError(f"condition dropout names unknown conditions {sorted(unknown)}; declared: {list(declared)}")
    out = dict(values)
    for condition in conditions:
        probability = float(probabilities.get(condition.name, 0.0))
        if not 0.0 <= probability <= 1.0:
            raise InputError(f"the dropout probability of condition {condition.name!r} must be in [0, 1]; "
                             f"got {probability}")
        if probability == 0.0:
            continue
        value = values[condition.name]
        drop = torch.rand(len(value), generator=generator, device=value.device) < probability
        out[condition.name] = torch.where(drop.reshape(-1, *([1] * (value.ndim - 1))), condition.null_like(value),
                                          value)
    return out
