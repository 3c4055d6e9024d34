"""Data-driven initialisation (nwb_lrconn.model._engine.initialise)."""

import numpy as np

from nwb_lrconn.model._engine import initialise as _init
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
from nwb_lrconn.model.simulate import simulate_spikes


def test_poisson_potentials_reach_the_saturated_range_of_tanh():
    # Units with large loadings sit at their floor or ceiling rate for much of a trial; their
    # target potentials must go past arctanh(0.97) ≈ 2.1, or the initial network runs far less
    # saturated than the data.
    net = sample_network("quadstable", 100, random_state=0)
    session = simulate_spikes(
        net, initial=grid_initial_conditions(6), bin_width=0.02, random_state=1
    )
    rec = session.to_recording()
    linearizer = _init.fit_linearizer(
        rec.data,
        rec.mask,
        observation="poisson",
        nonlinearity="tanh",
        bin_width=0.02,
        smooth_bins=5.0,
    )
    potentials = linearizer.potentials(rec.data, rec.mask)
    assert np.all(np.isfinite(potentials))
    norm = np.linalg.norm(net.M, axis=1)
    strong = norm > np.quantile(norm, 0.8)
    reach = np.percentile(np.abs(potentials[rec.mask]), 90, axis=0)
    assert np.median(reach[strong]) > 3.0


def test_first_bin_potentials_are_those_of_the_whole_trials():
    # Only the bins the smoothing kernel reaches from the first bin enter its potentials.
    net = sample_network("quadstable", 30, random_state=0)
    session = simulate_spikes(
        net, initial=grid_initial_conditions(3), n_time=60, bin_width=0.02, random_state=1
    )
    rec = session.to_recording()
    mask = rec.mask.copy()
    mask[1, 9:] = False  # a ragged trial
    for smooth_bins in (0.0, 2.5, 5.0):
        linearizer = _init.fit_linearizer(
            rec.data,
            mask,
            observation="poisson",
            nonlinearity="tanh",
            bin_width=0.02,
            smooth_bins=smooth_bins,
        )
        whole = linearizer.potentials(rec.data, mask)[:, 0]
        np.testing.assert_array_equal(linearizer.first_potentials(rec.data, mask), whole)
        target = linearizer.readout_target(rec.data, mask)
        np.testing.assert_array_equal(
            linearizer.potentials(rec.data, mask, target=target),
            linearizer.potentials(rec.data, mask),
        )
