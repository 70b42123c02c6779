import pytest
import torch

from elign.testing import assert_equivariant, random_batch, tiny_model


@pytest.fixture
def setup():
    model, _ = tiny_model(seed=1)
    # give the final coordinate layers real weight so that positions move measurably
    for name, p in model.named_parameters():
        if name.endswith("coord_mlp.4.weight"):
            p.data.normal_(0, 0.3)
    batch = random_batch([5, 3, 6], pad_to=7)
    z = model.normalize(batch)
    t = torch.full((3, 1), 0.4)
    return model, z, batch.node_mask, t


def test_dynamics_equivariant(setup):
    model, z, mask, t = setup
    with torch.no_grad():
        assert_equivariant(lambda z_, m_: model.predict_eps(z_, t, m_), z, mask, atol=1e-5)


def test_assert_equivariant_catches_a_broken_model(setup):
    model, z, mask, t = setup

    def broken(z_, m_):  # adds the absolute position: not translation/rotation equivariant
        out = model.predict_eps(z_, t, m_)
        return torch.cat([out[..., :3] + z_[..., :3] ** 2, out[..., 3:]], -1) * m_

    with torch.no_grad(), pytest.raises(AssertionError, match="not rotation equivariant"):
        assert_equivariant(broken, z, mask)


def test_padding_invariance(setup):
    model, z, mask, t = setup
    with torch.no_grad():
        out = model.predict_eps(z, t, mask)
        z_pad = torch.cat([z, torch.zeros(3, 4, z.shape[-1])], dim=1)
        mask_pad = torch.cat([mask, torch.zeros(3, 4, 1)], dim=1)
        out_pad = model.predict_eps(z_pad, t, mask_pad)
        # one molecule alone equals the same molecule inside the batch
        alone = model.predict_eps(z[1:2, :3], t[1:2], mask[1:2, :3])
    assert torch.allclose(out_pad[:, :7], out, atol=1e-6)
    assert out_pad[:, 7:].abs().max() == 0
    assert torch.allclose(alone, out[1:2, :3], atol=1e-6)


def test_output_is_centre_of_mass_free(setup):
    model, z, mask, t = setup
    with torch.no_grad():
        out = model.predict_eps(z, t, mask)
    com = (out[..., :3] * mask).sum(1) / mask.sum(1)
    assert com.abs().max() < 1e-6
