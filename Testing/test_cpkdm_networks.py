"""CPKDM's condition encoders (methods/cpkdm_networks.py) on tiny sizes: shapes, the recurrent kinematic encoder
reading frame order and strain, the edge-aware weights, and the morphology autoencoder learning a cluster mask."""

import pytest
import torch

from CMRSynthesisLib.analysis.kinematic_maps import KINEMATIC_CHANNELS
from CMRSynthesisLib.methods.cpkdm_networks import (
    ConvGRUCell,
    KinematicEncoder,
    MorphologyAutoencoder,
    edge_weights,
)


def test_conv_gru_starts_from_zero_and_keeps_its_shape():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 5)
    x = torch.randn(2, 3, 8, 8)
    state = cell(x, None)
    assert state.shape == (2, 5, 8, 8)
    assert torch.allclose(cell(x, torch.zeros(2, 5, 8, 8)), state)
    assert state.abs().max() < 1  # a convex mix of 0 and tanh


def test_kinematic_encoder_gives_one_token_per_latent_pixel_and_reads_order_and_strain():
    torch.manual_seed(0)
    encoder = KinematicEncoder(channels=8, downsample=4).eval()
    cine = torch.rand(2, 5, 16, 16)
    kinematics = torch.randn(2, 5, len(KINEMATIC_CHANNELS), 16, 16)
    tokens = encoder(cine, kinematics)
    assert tokens.shape == (2, 16, 8)  # (16 / 4)^2 tokens of 8 channels
    assert not torch.allclose(tokens, encoder(cine.flip(1), kinematics.flip(1)))  # frame order matters
    changed = kinematics.clone()
    changed[:, :, 1] = 0.0  # circumferential strain removed
    assert not torch.allclose(tokens, encoder(cine, changed))
    first = tokens[0:1]
    assert torch.allclose(first, encoder(cine[:1], kinematics[:1]), atol=1e-6)  # per sample, batch-independent
    with pytest.raises(ValueError, match="kinematics"):
        encoder(cine, kinematics[:, :, :3])


def test_edge_weights_mark_cluster_boundaries():
    mask = torch.zeros(1, 6, 6, dtype=torch.long)
    mask[0, :, 3:] = 2
    weights = edge_weights(mask, weight=4.0)
    assert torch.all(weights[0, :, 2:4] == 4.0)
    assert torch.all(weights[0, :, :2] == 1.0) and torch.all(weights[0, :, 4:] == 1.0)


def test_morphology_autoencoder_learns_a_cluster_mask_from_curves():
    """Two tissues with different recovery curves in random half-planes: the decoder learns their mask from the
    encoder's latent features (what makes F_morp carry the structure)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    times = torch.tensor([100.0, 180.0, 1100.0, 1180.0, 2100.0, 2180.0, 3100.0, 4100.0])

    def batch(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(16.0)[:, None].expand(16, 16)
        cols = rows.T
        angle = torch.rand(size, 1, 1, generator=generator) * 6.28
        side = (torch.cos(angle) * (rows - 7.5) + torch.sin(angle) * (cols - 7.5)) > 0
        t1 = torch.where(side, 1600.0, 900.0)
        curves = 1.0 - 1.9 * torch.exp(-times[None, :, None, None] / (0.8 * t1[:, None]))
        return curves + 0.05 * torch.randn(curves.shape, generator=generator), side.long()

    model = MorphologyAutoencoder(curves=8, clusters=2, channels=8, downsample=4)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        curves, mask = batch()
        features, logits = model(curves)
        loss = (torch.nn.functional.cross_entropy(logits, mask, reduction="none") * edge_weights(mask)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    curves, mask = batch(16)
    with torch.no_grad():
        features, logits = model(curves)
    assert features.shape == (16, 8, 4, 4)
    assert (logits.argmax(1) == mask).float().mean() > 0.9


def _cpkdm(kinematics: bool = True, relaxation: bool = True):
    from monai.networks.nets import DiffusionModelUNet

    from CMRSynthesisLib.methods.cpkdm_networks import CPKDMNetwork

    torch.manual_seed(0)
    denoiser = DiffusionModelUNet(spatial_dims=2, in_channels=3 + (6 if relaxation else 0), out_channels=3,
                                  channels=(8, 8), attention_levels=(False, kinematics), num_res_blocks=1,
                                  norm_num_groups=4, num_head_channels=8, with_conditioning=kinematics,
                                  cross_attention_dim=8 if kinematics else None)
    with torch.no_grad():  # MONAI zero-initialises output and attention projections: wake them to see the branches
        for parameter in denoiser.parameters():
            if parameter.ndim > 1 and not parameter.any():
                parameter.normal_(0.0, 0.2)
    return CPKDMNetwork(denoiser, latent_channels=3, factor=4, frames=4, curves=8,
                        kinematic_encoder=KinematicEncoder(channels=8, downsample=4) if kinematics else None,
                        morphology=MorphologyAutoencoder(curves=8, clusters=3, channels=6, downsample=4)
                        if relaxation else None).eval()


def test_cpkdm_network_through_the_diffusion_core_reads_both_branches():
    from CMRSynthesisLib.diffusion.conditioning import Condition
    from CMRSynthesisLib.diffusion.model import DiffusionModel
    from CMRSynthesisLib.diffusion.samplers import sample, timestep_pairs
    from CMRSynthesisLib.methods.cpkdm_networks import to_latent_grid

    network = _cpkdm()
    cine, kinematics, curves = torch.rand(1, 4, 32, 32), torch.randn(1, 4, 4, 32, 32), torch.randn(1, 8, 32, 32)
    motion = to_latent_grid(torch.cat([cine, kinematics.flatten(1, 2)], dim=1), 4)
    relaxation = to_latent_grid(curves, 4)
    assert motion.shape == (1, network.motion_channels, 8, 8) == (1, 4 * 5 * 16, 8, 8)
    z_t = torch.randn(1, 3, 8, 8)
    x = torch.cat([z_t, motion, relaxation], dim=1)
    back_z, (back_cine, back_kinematics), back_curves = network.split(x)
    assert torch.equal(back_z, z_t) and torch.equal(back_cine, cine) and torch.equal(back_kinematics, kinematics)
    assert torch.equal(back_curves, curves)
    steps = torch.tensor([500])
    with torch.no_grad():
        out = network(x, steps)
        assert out.shape == (1, 3, 8, 8)
        reversed_motion = to_latent_grid(torch.cat([cine, -kinematics.flatten(1, 2)], dim=1), 4)
        other_motion = torch.cat([z_t, reversed_motion, relaxation], dim=1)
        assert not torch.allclose(out, network(other_motion, steps))
        assert not torch.allclose(out, network(torch.cat([z_t, motion, -relaxation], dim=1), steps))
    model = DiffusionModel.from_config(network, {"num_train_timesteps": 1000, "clip_sample": False},
                                       (Condition("motion", "concat"), Condition("relaxation", "concat")))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        result = sample(model, timestep_pairs("ddim", 999, 1000, 5), shape=(1, 3, 8, 8), start="noise",
                        conditions={"motion": motion, "relaxation": relaxation}, sampler="ddim", eta=0.0,
                        samples=2, generator=[generator])
    assert result.mean.shape == (1, 3, 8, 8) and torch.isfinite(result.mean).all() and result.sd.abs().sum() > 0


def test_cpkdm_encoders_run_once_per_sampling_chain_with_the_same_numbers():
    """Inside one chain the kinematic tokens and F_morp are computed once while the conditions stay the same; the
    output equals the one computed afresh; a new condition computes them again; outside a chain, always."""
    from CMRSynthesisLib.methods.cpkdm_networks import to_latent_grid

    network = _cpkdm()
    calls = {"kinematic": 0, "morphology": 0}
    network.kinematic_encoder.register_forward_hook(lambda *_: calls.__setitem__("kinematic", calls["kinematic"] + 1))
    network.morphology.encoder.register_forward_hook(lambda *_: calls.__setitem__("morphology",
                                                                                  calls["morphology"] + 1))
    cine, kinematics, curves = torch.rand(1, 4, 32, 32), torch.randn(1, 4, 4, 32, 32), torch.randn(1, 8, 32, 32)
    conditions = torch.cat([to_latent_grid(torch.cat([cine, kinematics.flatten(1, 2)], dim=1), 4),
                            to_latent_grid(curves, 4)], dim=1)
    steps = torch.tensor([500])
    first, second = (torch.cat([torch.randn(1, 3, 8, 8), conditions], dim=1) for _ in range(2))
    with torch.no_grad():
        fresh = network(second, steps)
    with network.one_chain():
        network(first, steps)
        cached = network(second, steps)
        changed = second.clone()
        changed[:, 3] += 1.0  # another cine / kinematics
        network(changed, steps)
    assert torch.equal(cached, fresh)
    assert calls == {"kinematic": 1 + 2, "morphology": 1 + 1}  # fresh, then twice and once inside the chain


@pytest.mark.parametrize("kinematics, relaxation", [(False, True), (True, False)],
                         ids=["without kinematics", "without relaxation"])
def test_cpkdm_ablations_take_only_their_branch(kinematics, relaxation):
    network = _cpkdm(kinematics, relaxation)
    channels = 3 + network.motion_channels + network.relaxation_channels
    assert (network.motion_channels > 0) == kinematics and (network.relaxation_channels > 0) == relaxation
    with torch.no_grad():
        assert network(torch.randn(2, channels, 8, 8), torch.tensor([10, 900])).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="input channels"):
        network(torch.randn(1, channels + 1, 8, 8), torch.tensor([10]))
    with pytest.raises(ValueError, match="own cross-attention context"):
        network(torch.randn(1, channels, 8, 8), torch.tensor([10]), context=torch.zeros(1, 4, 8))


def test_cpkdm_encoders_must_reach_the_latent_grid():
    from CMRSynthesisLib.methods.cpkdm_networks import CPKDMNetwork

    with pytest.raises(ValueError, match="downsamples by 2, the latent grid by 4"):
        CPKDMNetwork(torch.nn.Identity(), latent_channels=3, factor=4, frames=4, curves=8,
                     kinematic_encoder=KinematicEncoder(channels=8, downsample=2), morphology=None)
