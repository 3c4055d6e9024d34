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


JOINT_SESSIONS, JOINT_UNITS = 3, 20  # sessions × disjoint units each of the joint-fit case


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

    template = LowRankRNNEstimator(rank=2, max_epochs=60, lbfgs_rounds=5, random_state=0)
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
