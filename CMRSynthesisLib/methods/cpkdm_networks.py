"""The condition encoders of CPKDM (paper 000, "Cardiac Physiology Knowledge-driven Diffusion Model for
Contrast-free Synthesis Myocardial Infarction Enhancement", Fig. 3): the kinematic branch CM-KMI and the
morphological branch MR-ESMP. The denoiser they feed (KMDI) is MONAI's `DiffusionModelUNet` on AutoencoderKL
latents, built from the checkpoint config.

- `KinematicEncoder` (CM-KMI, sec. 2.1): per cine frame, a convolutional stream over the frame, into which an encoder
  of the radial and one of the circumferential channels inject their features (added, after each is encoded on its
  own, so contraction and rotation are learnt apart as the paper separates them; the paper injects them one after
  the other, here both at once, a simplification); a convolutional GRU (Ballas et al., ICLR 2016) aggregates the
  frames in time order; its last hidden state, pooled to the latent grid, is the
  kinematic feature, given to the denoiser as cross-attention tokens (one per latent pixel).
- `MorphologyAutoencoder` (MR-ESMP, sec. 2.2): an encoder over the recovery curves on common inversion times
  (`analysis.relaxation`), whose features at the latent grid are the morphological condition F_morp (concatenated
  with the noisy latent, "introducing cardiac morphological features as the input"), and a decoder that predicts
  the clustering mask (`analysis.curve_clustering`) from them, which supervises the encoder.

Shapes: cine (B, T, H, W); kinematic channels (B, T, 4, H, W) in the order KINEMATIC_CHANNELS; curves (B, N, H, W);
H and W divisible by `downsample`, the latent grid being (H / downsample, W / downsample).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..analysis.kinematic_maps import KINEMATIC_CHANNELS
from ..diffusion.chain_cache import ChainCache

RADIAL, CIRCUMFERENTIAL = (0, 2), (1, 3)  # the channels of each direction's encoder


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                         nn.GroupNorm(min(8, out_channels), out_channels), nn.SiLU())


def _downsampler(in_channels: int, channels: int, downsample: int) -> nn.Sequential:
    """Conv blocks halving the grid log2(downsample) times (downsample a power of 2, >= 1), the first one already
    strided (no full-resolution block: at 8 frames x 3 streams it cost three quarters of a training step)."""
    if downsample < 1 or downsample & (downsample - 1):
        raise ValueError(f"downsample must be a power of 2; got {downsample}")
    halvings = downsample.bit_length() - 1
    if halvings == 0:
        return nn.Sequential(_conv_block(in_channels, channels))
    return nn.Sequential(*[_conv_block(in_channels if level == 0 else channels, channels, stride=2)
                           for level in range(halvings)])


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell (Ballas et al. 2016): gates and candidate from 3 x 3 convolutions of [x, h].
    forward(x (B, C_in, h, w), state (B, C, h, w) or None) -> new state (B, C, h, w)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gates = nn.Conv2d(in_channels + channels, 2 * channels, 3, padding=1)
        self.candidate = nn.Conv2d(in_channels + channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        if state is None:
            state = x.new_zeros(x.shape[0], self.channels, *x.shape[2:])
        update, reset = torch.sigmoid(self.gates(torch.cat([x, state], dim=1))).chunk(2, dim=1)
        candidate = torch.tanh(self.candidate(torch.cat([x, reset * state], dim=1)))
        return (1.0 - update) * state + update * candidate


class KinematicEncoder(nn.Module):
    """CM-KMI (module docstring): forward(cine (B, T, H, W), kinematics (B, T, 4, H, W)) -> tokens
    (B, (H / downsample) (W / downsample), channels), the cross-attention context of the denoiser."""

    def __init__(self, channels: int = 32, downsample: int = 4) -> None:
        super().__init__()
        self.downsample = downsample
        self.cine_stream = _downsampler(1, channels, downsample)
        self.radial = _downsampler(len(RADIAL), channels, downsample)
        self.circumferential = _downsampler(len(CIRCUMFERENTIAL), channels, downsample)
        self.recurrent = ConvGRUCell(channels, channels)

    def features(self, cine: torch.Tensor, kinematics: torch.Tensor) -> torch.Tensor:
        """The kinematic feature map (B, channels, H / downsample, W / downsample): the GRU's state after the last
        frame."""
        if cine.ndim != 4 or kinematics.shape[:2] != cine.shape[:2] or kinematics.shape[2] != len(KINEMATIC_CHANNELS):
            raise ValueError(f"expected cine (B, T, H, W) and kinematics (B, T, {len(KINEMATIC_CHANNELS)}, H, W); got "
                             f"{tuple(cine.shape)} and {tuple(kinematics.shape)}")
        state = None
        for t in range(cine.shape[1]):
            frame = self.cine_stream(cine[:, t:t + 1])
            frame = (frame + self.radial(kinematics[:, t, list(RADIAL)])
                     + self.circumferential(kinematics[:, t, list(CIRCUMFERENTIAL)]))
            state = self.recurrent(frame, state)
        return state

    def forward(self, cine: torch.Tensor, kinematics: torch.Tensor) -> torch.Tensor:
        return self.features(cine, kinematics).flatten(2).transpose(1, 2)


class MorphologyAutoencoder(nn.Module):
    """MR-ESMP (module docstring): `encode(curves (B, N, H, W))` -> F_morp (B, channels, H / downsample,
    W / downsample); `forward` -> (F_morp, cluster logits (B, clusters, H, W)) for the mask supervision."""

    def __init__(self, curves: int = 8, clusters: int = 4, channels: int = 16, downsample: int = 4) -> None:
        super().__init__()
        self.downsample = downsample
        self.encoder = nn.Sequential(_downsampler(curves, channels, downsample), nn.Conv2d(channels, channels, 1))
        layers: list[nn.Module] = []
        for _ in range(downsample.bit_length() - 1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(channels, channels)]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(channels, clusters, 1))

    def encode(self, curves: torch.Tensor) -> torch.Tensor:
        return self.encoder(curves)

    def forward(self, curves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encode(curves)
        return features, self.decoder(features)


def edge_weights(clusters: torch.Tensor, weight: float = 4.0) -> torch.Tensor:
    """Per-pixel loss weights (B, H, W) that put `weight` on the boundaries of a cluster mask (B, H, W) int (pixels
    with a 4-neighbour of another cluster) and 1 elsewhere: the edge-aware term, a documented lighter stand-in for the
    paper's edge-aware discriminator, which makes the mask's structure edges count more in the supervision."""
    padded = nn.functional.pad(clusters[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
    centre = padded[:, 1:-1, 1:-1]
    edge = ((padded[:, :-2, 1:-1] != centre) | (padded[:, 2:, 1:-1] != centre)
            | (padded[:, 1:-1, :-2] != centre) | (padded[:, 1:-1, 2:] != centre))
    return 1.0 + (weight - 1.0) * edge.float()


def to_latent_grid(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) images -> (B, C factor^2, H / factor, W / factor) by pixel unshuffle (lossless): how an
    image-resolution condition travels beside a latent through the diffusion core's channel concatenation."""
    return nn.functional.pixel_unshuffle(images, factor)


class CPKDMNetwork(nn.Module):
    """KMDI's denoiser with CPKDM's condition encoders, as the diffusion core calls a network:
    forward(x (B, latent + motion + relaxation channels, h, w), timesteps (B,)) -> predicted noise (B, latent, h, w).

    x holds [z_t, motion, relaxation] as `DiffusionModel` concatenates its conditions: "motion" is
    to_latent_grid([cine (F), kinematics (F x 4, frame-major)]) and "relaxation" to_latent_grid(curves (N)), each
    present only when its branch is (`kinematics`, `relaxation`: the paper's ablations without one of them).
    The kinematic tokens enter the denoiser by cross-attention, the morphological features F_morp by concatenation
    with z_t. denoiser: a MONAI DiffusionModelUNet whose in_channels are latent + F_morp channels (with relaxation)
    and with_conditioning / cross_attention_dim match the kinematic tokens (with kinematics).
    """

    def __init__(self, denoiser: nn.Module, *, latent_channels: int, factor: int, frames: int, curves: int,
                 kinematic_encoder: KinematicEncoder | None, morphology: MorphologyAutoencoder | None) -> None:
        """ValueError when a branch's encoder does not reduce the images by `factor` (its features would not lie on
        the latent grid)."""
        super().__init__()
        if kinematic_encoder is not None and kinematic_encoder.downsample != factor:
            raise ValueError(f"the kinematic encoder downsamples by {kinematic_encoder.downsample}, the latent grid "
                             f"by {factor}: they must agree")
        if morphology is not None and morphology.downsample != factor:
            raise ValueError(f"the morphology autoencoder downsamples by {morphology.downsample}, the latent grid "
                             f"by {factor}: they must agree")
        self.denoiser, self.kinematic_encoder, self.morphology = denoiser, kinematic_encoder, morphology
        self.latent_channels, self.factor, self.frames, self.curves = latent_channels, factor, frames, curves
        self._kinematic_cache, self._morphology_cache = ChainCache(), ChainCache()

    @contextlib.contextmanager
    def one_chain(self) -> Iterator[None]:
        """The scope of one sampling chain with fixed weights and no gradients: the kinematic tokens and F_morp are
        computed once while the conditions stay the same (`diffusion.chain_cache`)."""
        with self._kinematic_cache.one_chain(), self._morphology_cache.one_chain():
            yield

    @property
    def motion_channels(self) -> int:
        return 0 if self.kinematic_encoder is None else self.frames * (1 + len(KINEMATIC_CHANNELS)) * self.factor ** 2

    @property
    def relaxation_channels(self) -> int:
        return 0 if self.morphology is None else self.curves * self.factor ** 2

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(z_t, (cine (B, F, H, W), kinematics (B, F, 4, H, W)) or None, curves (B, N, H, W) or None) from x."""
        expected = self.latent_channels + self.motion_channels + self.relaxation_channels
        if x.shape[1] != expected:
            raise ValueError(f"CPKDM expects {expected} input channels (latent {self.latent_channels}, motion "
                             f"{self.motion_channels}, relaxation {self.relaxation_channels}); got {x.shape[1]}")
        z_t, rest = x[:, :self.latent_channels], x[:, self.latent_channels:]
        motion = curves = None
        if self.kinematic_encoder is not None:
            images = nn.functional.pixel_shuffle(rest[:, :self.motion_channels], self.factor)
            kinematics = images[:, self.frames:].unflatten(1, (self.frames, len(KINEMATIC_CHANNELS)))
            motion, rest = (images[:, :self.frames], kinematics), rest[:, self.motion_channels:]
        if self.morphology is not None:
            curves = nn.functional.pixel_shuffle(rest, self.factor)
        return z_t, motion, curves

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None:
            raise ValueError("CPKDM makes its own cross-attention context from the motion condition; declare its "
                             "conditions as 'concat'")
        z_t, motion, curves = self.split(x)
        if curves is not None:
            z_t = torch.cat([z_t, self._morphology_cache.features(curves, lambda: self.morphology.encode(curves))],
                            dim=1)
        if motion is None:
            return self.denoiser(z_t, timesteps)
        key = x[:, self.latent_channels:self.latent_channels + self.motion_channels]  # cine and kinematics
        tokens = self._kinematic_cache.features(key, lambda: self.kinematic_encoder(*motion))
        return self.denoiser(z_t, timesteps, context=tokens)


VARIANTS = ("cpkdm", "no_kinematics", "no_relaxation", "pure_data_driven")


def variant_branches(variant: str) -> tuple[bool, bool]:
    """(kinematics, relaxation) of a variant: "cpkdm" both, "no_kinematics" / "no_relaxation" the paper's ablations,
    "pure_data_driven" neither encoder (its raw cine and curves are concatenated as they are: `conditions_of`).
    ValueError for an unknown variant."""
    branches = {"cpkdm": (True, True), "no_kinematics": (False, True), "no_relaxation": (True, False),
                "pure_data_driven": (False, False)}
    if variant not in branches:
        raise ValueError(f"unknown virtual-LGE variant {variant!r}; known: {VARIANTS}")
    return branches[variant]


def conditions_of(variant: str) -> tuple[str, ...]:
    """The names of the concatenated conditions a variant's network takes after the latent, in order: "motion"
    (to_latent_grid of [cine (F), kinematics (F x 4)]) and / or "relaxation" (to_latent_grid of the curves); the
    pure data-driven model takes "cine" (to_latent_grid of the raw phases) and "relaxation" (the curves, unencoded)."""
    if variant == "pure_data_driven":
        return ("cine", "relaxation")
    kinematics, relaxation = variant_branches(variant)
    return tuple(name for name, used in (("motion", kinematics), ("relaxation", relaxation)) if used)


def build_cpkdm(config: dict) -> nn.Module:
    """The denoising network of a virtual-LGE config by its "variant": config["denoiser"] is a MONAI class config
    (built by `diffusion.networks.build_network`); "latent_channels", "factor" (image / latent size), "frames",
    "curves", and for the branches "kinematic_encoder" {"channels"} and "morphology" {"channels", "clusters"}.
    The pure data-driven variant is the denoiser alone, on [z_t, raw cine, curves]."""
    from ..diffusion.networks import build_network

    variant = config["variant"]
    kinematics, relaxation = variant_branches(variant)
    denoiser = build_network(config["denoiser"])
    if variant == "pure_data_driven":
        return denoiser
    factor = int(config["factor"])
    return CPKDMNetwork(
        denoiser, latent_channels=int(config["latent_channels"]), factor=factor, frames=int(config["frames"]),
        curves=int(config["curves"]),
        kinematic_encoder=KinematicEncoder(int(config["kinematic_encoder"]["channels"]), factor) if kinematics else None,
        morphology=MorphologyAutoencoder(int(config["curves"]), int(config["morphology"]["clusters"]),
                                         int(config["morphology"]["channels"]), factor) if relaxation else None)


def condition_values(variant: str, cine: torch.Tensor, kinematics: torch.Tensor, curves: torch.Tensor, factor: int
                     ) -> dict[str, torch.Tensor]:
    """The condition tensors of a batch for `variant` (`conditions_of`): cine (B, F, H, W), kinematics
    (B, F, 4, H, W), curves (B, N, H, W), each brought to the latent grid by `to_latent_grid`."""
    values = {"motion": lambda: to_latent_grid(torch.cat([cine, kinematics.flatten(1, 2)], dim=1), factor),
              "relaxation": lambda: to_latent_grid(curves, factor),
              "cine": lambda: to_latent_grid(cine, factor)}
    return {name: values[name]() for name in conditions_of(variant)}
