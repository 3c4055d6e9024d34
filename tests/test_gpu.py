"""The GPU path: a fit on CUDA matches the CPU fit statistically; batch tasks run on a GPU worker.

Skipped on machines without CUDA. Run on a GPU machine with ``pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from nwb_lrconn.data import Recording
from nwb_lrconn.model.estimator import LowRankRNNEstimator
from nwb_lrconn.model.networks import sample_network, simulate_latents

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _ring_rates(n_units: int = 60, n_trials: int = 48, n_time: int = 40) -> Recording:
    """Noisy rates of a ring-attractor network from random initial latents."""
    rng = np.random.default_rng(0)
    net = sample_network("ring", n_units, random_state=1)
    initial = rng.uniform(-2.0, 2.0, size=(n_trials, 2))
    latents = simulate_latents(net.M, net.K, initial, n_time, alpha=0.1)
    rates = np.tanh(latents @ net.M.T) + 0.05 * rng.standard_normal((n_trials, n_time, n_units))
    return Recording(
        data=rates,
        mask=np.ones((n_trials, n_time), bool),
        bin_width=0.02,
        kind="rates",
        unit_ids=np.arange(n_units),
        unit_rows=np.arange(n_units),
        trial_start_times=np.arange(n_trials, dtype=float),
    )


def _fit(recording: Recording, device: str, seed: int) -> tuple[LowRankRNNEstimator, float]:
    start = time.perf_counter()
    est = LowRankRNNEstimator(rank=2, max_epochs=150, random_state=seed, device=device)
    est.fit(recording)
    return est, time.perf_counter() - start


def test_cuda_fit_matches_cpu_fit_statistically():
    recording = _ring_rates()
    cpu, t_cpu = _fit(recording, "cpu", seed=0)
    cpu_other, _ = _fit(recording, "cpu", seed=1)
    gpu, t_gpu = _fit(recording, "cuda", seed=0)
    assert gpu.model_.M.device.type == "cuda"
    print(f"fit time: cpu {t_cpu:.1f} s, cuda {t_gpu:.1f} s")
    r2 = {
        "cpu": cpu.metrics_["r2"],
        "cpu_seed1": cpu_other.metrics_["r2"],
        "cuda": gpu.metrics_["r2"],
    }
    print("held-out R²:", r2)
    # Same quality of fit: both good, and the device changes R² no more than a new seed does
    # (with a floor for float32 round-off differences between the devices' kernels).
    assert r2["cuda"] > 0.9 and r2["cpu"] > 0.9
    assert abs(r2["cuda"] - r2["cpu"]) <= max(0.02, 2 * abs(r2["cpu_seed1"] - r2["cpu"]))
    # Same function: the predicted observations (gauge-free) agree on the held-out trials.
    test = recording.select_trials(cpu.test_trials_)
    pred_cpu, pred_gpu = cpu.predict(test), gpu.predict(test)
    resid = ((pred_gpu - pred_cpu)[test.mask] ** 2).sum()
    total = ((pred_cpu - pred_cpu[test.mask].mean(axis=0))[test.mask] ** 2).sum()
    assert 1 - resid / total > 0.95
    # Same split and initialisation from the same seed on both devices.
    np.testing.assert_array_equal(cpu.test_trials_, gpu.test_trials_)


def test_batch_tasks_run_on_a_gpu_worker(tmp_path):
    from nwb_lrconn.batch import run_batch
    from nwb_lrconn.config import RunConfig
    from nwb_lrconn.extension import read_results
    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.simulate import simulate_spikes

    rng = np.random.default_rng(0)
    network = sample_network("ring", 20, random_state=0)
    session = simulate_spikes(network, initial=rng.uniform(-2, 2, (20, 2)), n_time=40)
    source = write_units_nwb(tmp_path / "s.nwb", session.spike_times, trials=session.trials)
    config = RunConfig(device="cuda").with_overrides(
        trials="trials",
        **{
            "fit.max_epochs": 20,
            "n_steps_a": 200,
            "n_steps_b": 100,
            "n_samples": 200,
            "n_virtual_units": 200,
            "pool_size": 2000,
            "validation_every": 50,
        },
    )
    table = run_batch(
        source,
        ranks=[2],
        seeds=[0],
        config=config,
        output_dir=tmp_path / "out",
        n_workers=1,
        resources={"GPU": 1},
        progress=False,
    )
    assert list(table["status"]) == ["done"], table["error"].tolist()
    results = read_results(table["output"][0], config.name)
    assert RunConfig.from_json(results.provenance.config_json).device == "cuda"
    assert results.distribution is not None and results.degeneracy is not None
