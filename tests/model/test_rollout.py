"""The adjoint backward of ``rollout_activity`` and the chunked ``rollout_loss`` against autograd.

``latent_rollout`` is a plain autograd graph; the two fast paths must give the same values and
the same first-order gradients for every nonlinearity, offset form, noise and chunk size.
"""

from __future__ import annotations

import pytest
import torch

from nwb_lrconn.model._engine.chunk_loss import rollout_loss
from nwb_lrconn.model.rollout import (
    activation,
    activation_,
    activation_scaled_,
    input_scale,
    latent_rollout,
    rollout_activity,
)

N_TRIALS, N_TIME, N_UNITS, RANK, N_INPUTS = 3, 7, 11, 2, 2


def _problem(offset: str, with_noise: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    tensors = {
        "M": leaf(N_UNITS, RANK),
        "K": leaf(N_UNITS, RANK),
        "B": leaf(N_UNITS, N_INPUTS) if offset == "inputs" else None,
        "d": leaf(N_UNITS) if offset != "none" else None,
        "inputs": leaf(N_TRIALS, N_TIME, N_INPUTS) if offset == "inputs" else None,
        "initial": leaf(N_TRIALS, RANK),
        "noise": leaf(N_TRIALS, N_TIME - 1, RANK) if with_noise else None,
    }
    return tensors, [t for t in tensors.values() if t is not None]


def _rollout_kwargs(t, nonlinearity):
    args = (t["M"], t["K"], t["B"], t["d"], t["initial"], N_TIME)
    kwargs = {
        "alpha": 0.3,
        "nonlinearity": nonlinearity,
        "inputs": t["inputs"],
        "noise": t["noise"],
    }
    return args, kwargs


CASES = [
    (nonlinearity, offset, noise)
    for nonlinearity in ("tanh", "relu", "softplus")
    for offset in ("none", "d", "inputs")
    for noise in (False, True)
]


@pytest.mark.parametrize(("nonlinearity", "offset", "with_noise"), CASES)
def test_adjoint_backward_matches_autograd(nonlinearity, offset, with_noise):
    t, leaves = _problem(offset, with_noise)
    args, kwargs = _rollout_kwargs(t, nonlinearity)
    latents_a, activity = rollout_activity(*args, **kwargs)
    latents_b, potentials = latent_rollout(*args, **kwargs)
    torch.testing.assert_close(latents_a, latents_b)
    torch.testing.assert_close(activity, activation(potentials, nonlinearity))
    g = torch.Generator().manual_seed(1)
    w_lat = torch.randn(latents_a.shape, generator=g, dtype=torch.float64)
    w_act = torch.randn(activity.shape, generator=g, dtype=torch.float64)
    fast = torch.autograd.grad((latents_a * w_lat).sum() + (activity * w_act).sum(), leaves)
    slow = torch.autograd.grad(
        (latents_b * w_lat).sum() + (activation(potentials, nonlinearity) * w_act).sum(), leaves
    )
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("nonlinearity", "offset", "with_noise"), CASES)
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 50])
def test_chunked_loss_matches_the_full_loss(nonlinearity, offset, with_noise, chunk_size):
    t, leaves = _problem(offset, with_noise)
    g = torch.Generator().manual_seed(2)
    target = torch.randn(N_TRIALS, N_TIME, N_UNITS, generator=g, dtype=torch.float64)
    gain = torch.randn(N_UNITS, generator=g, dtype=torch.float64).requires_grad_()
    log_std = torch.randn(N_UNITS, generator=g, dtype=torch.float64).requires_grad_()
    unused = torch.zeros(N_UNITS, dtype=torch.float64, requires_grad=True)

    def loss_fn(activity, start, stop, gain, log_std, unused):
        z = (gain * activity - target[:, start:stop]) / log_std.exp()
        return (0.5 * z**2 + log_std).sum() / 17.0

    args, kwargs = _rollout_kwargs(t, nonlinearity)
    chunked = rollout_loss(
        *args, loss_fn, (gain, log_std, unused), chunk_size=chunk_size, **kwargs
    )
    _, potentials = latent_rollout(*args, **kwargs)
    full = loss_fn(activation(potentials, nonlinearity), 0, N_TIME, gain, log_std, unused)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=0)
    fast = torch.autograd.grad(3.0 * chunked, [*leaves, gain, log_std])
    slow = torch.autograd.grad(3.0 * full, [*leaves, gain, log_std])
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # A parameter the loss never uses gets no gradient (None), as under plain autograd.
    chunked = rollout_loss(*args, loss_fn, (gain, log_std, unused), chunk_size=2, **kwargs)
    chunked.backward()
    assert unused.grad is None


def test_chunked_loss_never_holds_the_whole_activity():
    """Peak extra memory is one chunk, not (n_trials, n_time, n_units)."""
    seen = []

    def loss_fn(activity, start, stop):
        seen.append(tuple(activity.shape))
        return activity.sum()

    M = torch.randn(50, 2, requires_grad=True)
    rollout_loss(
        M, M.detach(), None, None, torch.zeros(4, 2), 30, loss_fn, alpha=0.1, chunk_size=8
    )
    assert seen == [(4, 8, 50), (4, 8, 50), (4, 8, 50), (4, 6, 50)]


def test_rollout_loss_refuses_an_unknown_nonlinearity():
    M = torch.randn(5, 2)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh', 'relu' or 'softplus'"):
        rollout_loss(
            M,
            M,
            None,
            None,
            torch.zeros(1, 2),
            3,
            lambda y, a, b: y.sum(),
            alpha=0.1,
            nonlinearity="sigmoid",
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fast_paths_match_autograd_on_cuda(dtype):
    tol = {"rtol": 1e-9, "atol": 1e-11} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-5}
    target = torch.ones(N_TRIALS, N_TIME, N_UNITS, device="cuda", dtype=dtype)

    def loss_fn(activity, start, stop):
        return ((activity - target[:, start:stop]) ** 2).sum()

    for nonlinearity, offset, with_noise in CASES:
        t, _ = _problem(offset, with_noise)
        t = {
            k: None if v is None else v.detach().to("cuda", dtype).requires_grad_()
            for k, v in t.items()
        }
        leaves = [v for v in t.values() if v is not None]
        args, kwargs = _rollout_kwargs(t, nonlinearity)
        _, activity = rollout_activity(*args, **kwargs)
        _, potentials = latent_rollout(*args, **kwargs)
        reference = loss_fn(activation(potentials, nonlinearity), 0, N_TIME)
        for fast in (
            loss_fn(activity, 0, N_TIME),
            rollout_loss(*args, loss_fn, chunk_size=3, **kwargs),
        ):
            got = torch.autograd.grad(fast, leaves)
            want = torch.autograd.grad(reference, leaves, retain_graph=True)
            for a, b in zip(got, want, strict=True):
                assert a.device.type == "cuda"
                torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "softplus"])
@pytest.mark.parametrize("size", [10, 5000])  # below and above the size where tanh changes form
def test_activation_of_the_scaled_potential_is_bitwise_that_of_the_potential(nonlinearity, size):
    x = torch.randn(size, generator=torch.Generator().manual_seed(0)) * 3
    want = activation_(x.clone(), nonlinearity)
    got = activation_scaled_(x * input_scale(nonlinearity), nonlinearity)
    assert torch.equal(got, want)
