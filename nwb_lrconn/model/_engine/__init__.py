"""How :class:`~nwb_lrconn.model.estimator.LowRankRNNEstimator` trains (private).

The network itself, :class:`~nwb_lrconn.model.lowrank.LowRankRNN`, is pure math; everything a fit
needs beyond it lives here, one step per module, in the order a fit runs them:

- :mod:`.initialise`: observations mapped back to potentials, PCA loadings and latents, ridge K;
- :mod:`.objective`: the trials, the optimisation settings and the loss that is minimised;
- :mod:`.chunk_loss`: the rollout fused with the loss, evaluated one chunk of time at a time;
- :mod:`.loop`: the Adam, L-BFGS and unit-refit phases and their held-out stopping rule;
- :mod:`.unit_refit`: per-unit Fisher scoring on fixed latents and the ridge output loadings;
- :mod:`.initial_latents`: each trial's κ(0) by damped Gauss–Newton with the network fixed.

The model description is in ``tutorials/model.md``.
"""
