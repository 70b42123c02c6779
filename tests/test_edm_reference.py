"""Our EDM reproduces the original implementation's outputs on its own checkpoints."""

import pytest
import torch

from elign.data.batch import MoleculeBatch
from elign.io.checkpoints import load_checkpoint


def rel(a, b, mask):
    return (((a - b) * mask).norm() / (b * mask).norm()).item()


@pytest.mark.parametrize("run", ["edm_qm9_tiny", "edm_qm9_full"])
def test_reproduces_reference(edm_fixtures, run):
    model, config, meta = load_checkpoint(edm_fixtures / run)
    r = torch.load(edm_fixtures / run / "reference.pt", weights_only=True)
    mask = r["node_mask"]
    assert meta["source"] == "edm"
    if run == "edm_qm9_full":
        assert (config.hidden, config.n_layers) == (256, 9)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert n_params == 5_339_920
    batch = MoleculeBatch(r["x"], r["one_hot"], r["charges"], mask)
    assert torch.allclose(model.normalize(batch), r["xh_normalized"], atol=1e-6)
    with torch.no_grad():
        eps = model.predict_eps(r["zt"], r["t"], mask)
        mean, std, x0 = model.scheduler.reverse(r["zt"], eps, r["s"], r["t"], mask)
    assert rel(eps, r["eps_pred"], mask) <= 1e-5
    assert rel(mean, r["mu_s"], mask) <= 1e-5
    assert rel(x0, r["x0_pred"], mask) <= 1e-5
    assert ((std - r["sigma_s"]).abs() / r["sigma_s"]).max().item() <= 1e-5
    assert ((model.gamma.gamma - r["gamma_table"]).norm() / r["gamma_table"].norm()).item() <= 1e-5
    l2 = ((r["eps"] - eps) ** 2 * mask).sum(dim=(1, 2))
    assert ((l2 - r["eps_l2_sum"]).abs() / r["eps_l2_sum"]).max().item() <= 1e-4
