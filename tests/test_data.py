"""Short reprs of the result dataclasses: shapes and key numbers, never array dumps."""

from __future__ import annotations

import numpy as np

from nwb_lrconn.data import Recording, SourceInfo
from nwb_lrconn.extension.mock import mock_results


def test_results_repr_is_short_for_200_units():
    results = mock_results(n_units=200, n_trials=5, random_state=1)
    text = repr(results)
    assert len(text) < 500, text
    assert "200 units, rank 2" in text and "dense, 1200 params" in text
    for part in (results.fit, results.posterior, results.degeneracy, results.distribution):
        assert len(repr(part)) < 300 and "array(" not in repr(part)
    assert repr(results.fit).startswith("LowRankFit(n_units=200, rank=2, n_inputs=1, n_trials=5,")
    deg = results.degeneracy
    assert f"n_constrained={deg.n_constrained}, n_degenerate={deg.n_degenerate}" in repr(deg)


def test_results_repr_without_optional_parts():
    results = mock_results(with_posterior=False, with_degeneracy=False, with_distribution=False)
    text = repr(results)
    assert "posterior='none'" in text and "distribution='none'" in text


def test_results_html_repr_holds_the_key_numbers():
    results = mock_results(n_units=200, name="ring<1>")
    page = results._repr_html_()
    assert page.startswith("<table>") and page.endswith("</table>")
    assert page.count("<tr>") == 7
    deg = results.degeneracy
    for number in (200, results.posterior.n_params, deg.n_constrained, deg.n_degenerate):
        assert f"{number}" in page
    assert "ring&lt;1&gt;" in page and "ring<1>" not in page  # escaped


def test_recording_repr_summarises_shapes():
    rec = Recording(
        data=np.zeros((4, 50, 300)), mask=np.ones((4, 50), bool), bin_width=0.01,
        kind="rates", unit_ids=np.arange(300), unit_rows=np.arange(300),
        trial_start_times=np.arange(4.0), source=SourceInfo(path="session.nwb"),
    )  # fmt: skip
    assert repr(rec) == (
        "Recording(kind='rates', n_trials=4, n_time=50, n_units=300, n_inputs=0, "
        "bin_width=0.01, path='session.nwb')"
    )
