"""Device consistency of the GPU paths, checked without a GPU: collectives see tensors on the process's
device (NCCL refuses CPU tensors) and generators must sit on the device they draw for."""

import pytest
import torch
import torch.distributed as dist

from elign.data.geometry import sample_center_gravity_zero_gaussian
from elign.diffusion.objective import TrainingObjective
from elign.testing import tiny_model
from elign.training import distributed


class _Stop(Exception):
    pass


@pytest.fixture
def collectives(monkeypatch):
    """A fake all_reduce that records the device and size of every tensor handed to it."""
    seen = []

    def all_reduce(tensor, op=None):
        seen.append((tensor.device.type, tensor.numel()))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    return seen


def test_metrics_are_reduced_on_the_process_device(collectives, monkeypatch):
    def stop_after_reduce(tensor, op=None):
        collectives.append((tensor.device.type, tensor.numel()))
        raise _Stop  # a meta tensor holds no values to read back; the device is what is checked

    monkeypatch.setattr(dist, "all_reduce", stop_after_reduce)
    with pytest.raises(_Stop):
        distributed.average_metrics({"loss": 1.0, "failed": 2}, 2, torch.device("meta"), sums=("failed",))
    assert collectives == [("meta", 2)]


def test_gradients_are_reduced_in_one_bucket_on_their_device(collectives):
    model, _ = tiny_model()
    model = model.to("meta")
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.ones_like(p)
    distributed.average_gradients(model, 2)
    assert collectives == [("meta", sum(p.numel() for p in params))]


def test_gradient_bucket_averages_every_parameter(collectives, monkeypatch):
    def doubling(tensor, op=None):  # two processes holding the same gradient
        tensor.mul_(2)

    monkeypatch.setattr(dist, "all_reduce", doubling)
    model, _ = tiny_model()
    expected = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.grad = torch.randn_like(p)
            expected[name] = p.grad.clone()
    distributed.average_gradients(model, 2)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.grad, expected[name]), name


def test_a_generator_on_another_device_is_named():
    mask = torch.ones(2, 3, 1, device="meta")
    with pytest.raises(ValueError, match="generator on cpu cannot draw noise for tensors on meta"):
        sample_center_gravity_zero_gaussian(mask, torch.Generator())
    with pytest.raises(ValueError, match="generator on cpu"):
        TrainingObjective().sample_times(4, 10, "meta", torch.Generator())
    sample_center_gravity_zero_gaussian(torch.ones(2, 3, 1), torch.Generator())  # the same device is fine


def test_one_rule_resolves_every_device_name(monkeypatch):
    import torch

    from elign.training.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == "cuda:3"  # under torchrun: this process's GPU


def test_the_process_group_follows_the_device_not_the_machine(monkeypatch):
    """Under torchrun, a --device cpu run uses gloo even where CUDA is present (nccl cannot reduce CPU tensors)."""
    import torch

    from elign.training.distributed import process_group_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert process_group_backend("cpu") == "gloo"
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert process_group_backend("cuda:1") == "nccl" and chosen == [torch.device("cuda:1")]
