"""The maximum-entropy connectivity distribution ("Connector", Kim et al. 2026).

Two continuous normalizing flows trained by conditional flow matching
(:mod:`nwb_lrconn.inference.flows`):

- **flow A** over the per-unit input-side vector z = (m, b, d) of the stage-1 fit;
- **flow B** over the output-side loading k given z. Its targets: sets of S virtual units z_s
  are drawn from flow A, their activations Φ_{t,s} = φ(m_s·κ_t + b_s·u_t + d_s)
  are formed over the training latents, and the latent updates Y_t = κ_{t+1} − (1−α)κ_t are
  regressed onto (α/S)Φ with the ridge (maximum-entropy Gaussian prior) strength λ:

      k̂ = argmin_k ‖Y − (α/S) Φ k‖² + λ‖k‖².

Cost (what makes this fast, and scale with the data): the latent features X_t = (κ_t, u_t, 1) are
computed once and, by default, the visited states are merged into a weighted quadrature (states
closer than ``state_resolution`` standard deviations share one row, its weight the number of
merged rows), so Φ has a few thousand rows instead of n_trials·n_time; each ridge system is solved
by Cholesky in the smaller of its S×S and rows×rows forms, for ``n_target_sets`` sets of virtual
units drawn once from a pool of flow-A samples, which flow B's steps then cycle through; the
velocity networks' width and flow A's schedule follow the number of units
(:func:`.auto_hidden_features`, :func:`.auto_flow_steps`), and flow A stops on the log-likelihood
of held-out units. Flow B's held-out one-step prediction error is recorded every
``validation_every`` steps (and stops it only with ``keep_best``).

One module per concept:

- :mod:`.data`: what the flows learn from (:class:`ConnectorData`) and the scaling of z;
- :mod:`.ridge`: the state quadrature and the ridge targets of flow B;
- :mod:`.estimator`: the two-flow trainer and sampler (:class:`ConnectorEstimator`);
- :mod:`.storage`: a fitted estimator rebuilt from its stored arrays.

Which units count as "enough" for flows at all is decided in
:mod:`nwb_lrconn.inference.distribution`; below that, :mod:`nwb_lrconn.inference.mixture` holds
the simpler model.
"""

from .data import ConnectorData, varying_z_columns, z_scaling
from .estimator import ConnectorEstimator, auto_flow_steps, auto_hidden_features
from .ridge import (
    StateQuadrature,
    build_state_quadrature,
    quadrature_ridge_targets,
    ridge_state_coefficients,
)
from .storage import connector_from_distribution

__all__ = [
    "ConnectorData",
    "StateQuadrature",
    "build_state_quadrature",
    "quadrature_ridge_targets",
    "ridge_state_coefficients",
    "ConnectorEstimator",
    "varying_z_columns",
    "z_scaling",
    "auto_flow_steps",
    "auto_hidden_features",
    "connector_from_distribution",
]
