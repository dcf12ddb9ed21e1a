"""CPKDM's condition encoders (methods/cpkdm_networks.py) on tiny sizes: shapes, the recurrent kinematic encoder
reading frame order and strain, the edge-aware weights, and the morphology autoencoder learning a cluster mask."""

import pytest
import torch

from CMRSynthesisLib.methods.cpkdm_networks import (
    KINEMATIC_CHANNELS,
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
