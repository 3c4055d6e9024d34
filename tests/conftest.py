"""Shared fixtures: the real-data folder (env var NWB_LRCONN_DATA, default ../shared/data), a
local mock DANDI Archive (``mock_dandi``) and a small network recorded as several sessions with
its joint fit (``joint_sessions``, ``joint_fit``; stage 1 and stage 3 of the joint fit)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]

# One thread per test process (and its subprocesses): the suite's fits are small, and on a
# shared or oversubscribed machine torch's spinning worker threads slow them by orders of
# magnitude.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _data_dir() -> Path:
    env = os.environ.get("NWB_LRCONN_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def _quiet_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNWB_NO_CACHE_DIR", "1")
    # A developer's own stream cache or DANDI instance must not leak into the tests.
    monkeypatch.delenv("NWB_LRCONN_CACHE_DIR", raising=False)
    monkeypatch.delenv("NWB_LRCONN_DANDI_INSTANCE", raising=False)


def load_mock_dandi() -> ModuleType:
    """The module ``tests/io/mock_dandi.py`` (the tests folder is not a package)."""
    name = "nwb_lrconn_tests_mock_dandi"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "tests" / "io" / "mock_dandi.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def mock_dandi(monkeypatch: pytest.MonkeyPatch):
    """Start local mock DANDI servers: ``mock_dandi({asset path: file}, **options)``.

    Returns a started ``MockDandi`` (see ``tests/io/mock_dandi.py``), stopped at teardown. The
    dandi client's online version check is switched off (offline tests).
    """
    monkeypatch.setenv("DANDI_NO_ET", "1")
    servers = []

    def start(assets, **options):
        server = load_mock_dandi().MockDandi(assets, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of shared real data; tests using it skip with a reason when it is absent."""
    path = _data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder not found at {path} (set NWB_LRCONN_DATA)")
    return path


@pytest.fixture(scope="session")
def data_file(data_dir: Path):
    """Return a function mapping a path relative to the data folder to a path, or skip."""

    def get(relative: str) -> Path:
        path = data_dir / relative
        if not path.exists():
            pytest.skip(f"real data file not found: {path}")
        return path

    return get


JOINT_SESSIONS, JOINT_UNITS = 3, 20  # the model's joint-fit case: sessions × disjoint units each


def record_sessions(other: str | None = None, *, per_session: int = JOINT_UNITS, seed: int = 0):
    """A quadstable network of 3 × ``per_session`` units recorded as 3 sessions of disjoint units.

    Each session has its own 15 trials (rates, noise 0.05). With ``other`` (a law of
    :func:`~nwb_lrconn.model.networks.sample_network`), the last session records a network of
    that law instead. Returns (network, recordings, true latents per session).
    """
    import numpy as np

    from nwb_lrconn.model.networks import sample_network
    from nwb_lrconn.model.simulate import simulate_rates

    net = sample_network("quadstable", JOINT_SESSIONS * per_session, random_state=seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(net.n_units)
    recordings, truths = [], []
    for s in range(JOINT_SESSIONS):
        source = net
        if other is not None and s == JOINT_SESSIONS - 1:
            source = sample_network(other, net.n_units, random_state=seed + 2)
        sim = simulate_rates(
            source,
            initial=rng.uniform(-2, 2, (15, 2)),
            n_time=60,
            noise_std=0.05,
            random_state=10 + s,
        )
        units = np.sort(order[s * per_session : (s + 1) * per_session])
        recordings.append(sim.to_recording().select_units(units))
        truths.append(sim.latents)
    return net, recordings, truths


def fit_joint(recordings):
    """The joint fit of the tests: rank 2, short training."""
    from nwb_lrconn.model.estimator import LowRankRNNEstimator
    from nwb_lrconn.model.joint import JointLowRankRNN

    # Short, but not so short that the likelihood comparisons judge unconverged fits: capped
    # at 5 L-BFGS rounds, the joint fit stopped mid-descent and the verdict on session 0 moved
    # with Adam's preconditioner alone (differences -0.09 to -0.15 against a standard error of
    # 0.08-0.10); with 10, the joint fit's rounds stop on their own.
    template = LowRankRNNEstimator(rank=2, max_epochs=60, lbfgs_rounds=10, random_state=0)
    return JointLowRankRNN(template).fit(recordings)


@pytest.fixture(scope="session")
def joint_sessions():
    """(network, recordings, true latents): 60 quadstable units as 3 sessions of 20."""
    return record_sessions()


@pytest.fixture(scope="session")
def joint_fit(joint_sessions):
    """The JointLowRankRNN of ``joint_sessions`` (never modify it)."""
    return fit_joint(joint_sessions[1])


@pytest.fixture(scope="session")
def joint_case():
    """The helpers behind ``joint_sessions`` and ``joint_fit``: (record_sessions, fit_joint)."""
    return record_sessions, fit_joint


# ------------------------------------------------------------------ several sessions, one network
RING_UNITS, RING_SESSIONS = 24, 2  # the pipeline's joint-fit case


@pytest.fixture(scope="session")
def joint_sources(tmp_path_factory) -> list[Path]:
    """A 24-unit ring network recorded as 2 sessions of disjoint 12-unit halves, each with its
    own trials (spikes), as NWB files of one subject with session ids day0, day1."""
    import numpy as np

    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    folder = tmp_path_factory.mktemp("joint_sources")
    network = sample_network("ring", RING_UNITS, random_state=0)
    halves = np.random.default_rng(1).permutation(RING_UNITS).reshape(RING_SESSIONS, -1)
    paths = []
    for s, units in enumerate(np.sort(halves, axis=1)):
        sim = simulate_spikes(
            network,
            initial=grid_initial_conditions(4),
            n_time=40,
            rate_range=(1.0, 60.0),
            random_state=10 + s,
        )
        paths.append(
            write_units_nwb(
                folder / f"day{s}.nwb",
                [sim.spike_times[u] for u in units],
                unit_ids=units.tolist(),
                trials=sim.trials,
                metadata={"session_id": f"day{s}"},
            )
        )
    return paths


@pytest.fixture(scope="session")
def joint_config():
    """A small, fast joint-fit configuration matching ``joint_sources``."""
    from nwb_lrconn.config import DistributionConfig, FitConfig, ReadConfig, RunConfig

    return RunConfig(
        read=ReadConfig(bin_width=0.02, trials="trials"),
        fit=FitConfig(rank=2, alpha=0.5, max_epochs=10, patience=2, lbfgs_rounds=2),
        distribution=DistributionConfig(enabled=False),
        seed=3,
        name="joint",
    )


@pytest.fixture(scope="session")
def joint_fitted(joint_sources, joint_config):
    """(recordings, joint model, warrant rows) of ``joint_sources``: the one real joint fit the
    pipeline, CLI and batch tests share (see ``reuse_joint_fit``)."""
    from nwb_lrconn import pipeline_joint

    recordings = pipeline_joint._read_sessions(
        joint_config, joint_sources, lambda message: None, None, checked=False
    )
    labels = [path.name for path in joint_sources]
    joint, warrant = pipeline_joint._fit_joint(
        joint_config, recordings, labels, progress=False, log=lambda message: None
    )
    return recordings, joint, warrant


@pytest.fixture
def reuse_joint_fit(joint_fitted, monkeypatch):
    """Make the pipeline's joint fit return ``joint_fitted``'s (every other step runs); returns
    the list of calls (labels) so that a test can check whether the fit was reached."""
    from nwb_lrconn import pipeline_joint

    calls: list = []
    _, joint, warrant = joint_fitted

    def reused(config, recordings, labels, *, progress, log):
        calls.append(list(labels))
        log("joint fit (reused from the test session's fit)")
        return joint, warrant

    monkeypatch.setattr(pipeline_joint, "_fit_joint", reused)
    return calls
