"""Spatial terms (afw order and normalisation) and the candidate statistics of ip_diffim."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from utils import meanclip

from jaxdiffim import InvalidInputError, spatial_terms
from jaxdiffim.core.stats import (
    cell_ids,
    clipped_mean_std,
    quantile_masked,
    residual_statistics,
    visited,
)


def test_chebyshev_terms_order_and_box():
    """T0T0, T1(x), T1(y), T2(x), T1T1, T2(y) over Box2D(bbox) = min-0.5 .. max+0.5."""
    bbox = (10, 20, 109, 69)  # 100 x 50 pixels
    x, y = 30.0, 60.0
    xn = (x - 59.5) / 50.0
    yn = (y - 44.5) / 25.0
    with jax.enable_x64(True):
        got = np.asarray(spatial_terms(x, y, 2, bbox))
    t2 = lambda t: 2 * t * t - 1  # noqa: E731
    np.testing.assert_allclose(got, [1, xn, yn, t2(xn), xn * yn, t2(yn)], rtol=1e-12)
    with jax.enable_x64(True):
        got3 = np.asarray(spatial_terms(x, y, 3, bbox, "polynomial"))
    expected = [1, xn, yn, xn**2, xn * yn, yn**2, xn**3, xn**2 * yn, xn * yn**2, yn**3]
    np.testing.assert_allclose(got3, expected, rtol=1e-12)
    # the box corners map to -1 and +1
    edges = np.asarray(spatial_terms(np.array([9.5, 109.5]), np.array([19.5, 69.5]), 1, bbox))
    np.testing.assert_allclose(edges[:, 1:], [[-1, -1], [1, 1]], atol=1e-6)


def test_spatial_model_type_checked():
    with pytest.raises(InvalidInputError, match="chebyshev1"):
        spatial_terms(1.0, 1.0, 1, (0, 0, 9, 9), "foo")


def test_kernel_sum_statistics_match_afw():
    """test_kernelSumVisitor: kSums [1,1,1,1,2,3,4] -> MEANCLIP/STDEVCLIP; 50 is clipped alone."""
    ksum = jnp.array([1, 1, 1, 1, 2, 3, 4, 50.0])
    mask = jnp.array([True] * 7 + [False])
    mean, std = clipped_mean_std(ksum, mask)
    # exact values: all seven survive, mean 13/7, unbiased variance (33 - 169/7) / 6
    assert float(mean) == pytest.approx(13 / 7, rel=1e-6)
    assert float(std) == pytest.approx(np.sqrt((33 - 169 / 7) / 6), rel=1e-6)
    ref = meanclip(np.asarray(ksum[:7]))
    assert float(mean) == pytest.approx(ref[0], rel=1e-6)
    assert float(std) == pytest.approx(ref[1], rel=1e-6)
    # with the outlier: it is the only one beyond 3 std
    mean8, std8 = clipped_mean_std(ksum, jnp.ones(8, bool))
    reject = np.abs(np.asarray(ksum) - float(mean8)) > 3.0 * float(std8)
    np.testing.assert_array_equal(reject, [False] * 7 + [True])
    # a single value: mean = value, std = 0
    m1, s1 = clipped_mean_std(ksum, jnp.arange(8) == 4)
    assert (float(m1), float(s1)) == (2.0, 0.0)


def test_clipped_statistics_random_against_numpy():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 200), [15.0, -12.0, 30.0]])
    mean, std = clipped_mean_std(jnp.asarray(x), jnp.ones(x.size, bool))
    ref = meanclip(x)
    assert float(mean) == pytest.approx(ref[0], rel=1e-5, abs=1e-6)
    assert float(std) == pytest.approx(ref[1], rel=1e-5)


def test_residual_statistics_unbiased():
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 2.0, (2, 400))
    var = np.full_like(d, 4.0)
    good = np.ones_like(d, bool)
    good[1, :100] = False
    mean, rms = residual_statistics(jnp.asarray(d), jnp.asarray(var), jnp.asarray(good))
    z = d / 2.0
    assert float(mean[0]) == pytest.approx(z[0].mean(), rel=1e-5)
    assert float(rms[0]) == pytest.approx(z[0].std(ddof=1), rel=1e-5)
    assert float(rms[1]) == pytest.approx(z[1, 100:].std(ddof=1), rel=1e-5)


def test_cells_and_visiting_order():
    """3x3 cells of 128 px; inside a cell the highest ratings are visited first."""
    bbox = (0, 0, 383, 383)
    x = jnp.array([10.0, 20.0, 30.0, 200.0, 300.0, 383.0])
    y = jnp.array([10.0, 20.0, 30.0, 10.0, 300.0, 383.0])
    cells = np.asarray(cell_ids(x, y, bbox, 128, 128))
    np.testing.assert_array_equal(cells, [0, 0, 0, 1, 8, 8])
    rating = jnp.array([1.0, 3.0, 2.0, 1.0, 1.0, 1.0])
    eligible = jnp.ones(6, bool)
    vis = np.asarray(visited(eligible, jnp.asarray(cells), rating, 2))
    np.testing.assert_array_equal(vis, [False, True, True, True, True, True])
    # rejecting the best one lets the third one in
    vis = np.asarray(visited(eligible.at[1].set(False), jnp.asarray(cells), rating, 2))
    np.testing.assert_array_equal(vis, [True, False, True, True, True, True])
    # equal ratings: the later candidate comes first (afw lower_bound insertion)
    vis = np.asarray(visited(eligible, jnp.asarray(cells), jnp.ones(6), 1))
    np.testing.assert_array_equal(vis, [False, False, True, True, False, True])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=40),
    st.integers(0, 5),
)
def test_clipped_statistics_property(values, n_outliers):
    """afw MEANCLIP/STDEVCLIP and the median agree with the numpy reference on any sample."""
    x = np.asarray(values + [1e3 * (i + 1) for i in range(n_outliers)], float)
    with jax.enable_x64(True):
        mask = jnp.ones(x.size, bool)
        mean, std = clipped_mean_std(jnp.asarray(x), mask)
        median = quantile_masked(jnp.asarray(x), mask, 0.5)
    ref_mean, ref_std = meanclip(x)
    assert float(median) == pytest.approx(np.median(x), abs=1e-9)
    assert float(mean) == pytest.approx(ref_mean, rel=1e-9, abs=1e-9)
    assert float(std) == pytest.approx(ref_std, rel=1e-9, abs=1e-9)
