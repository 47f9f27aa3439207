"""The footprint residual ratio (ip_diffim's QA metric) against a plain per-star loop."""

import numpy as np
import pytest

from jaxdiffim.algorithms.quality import footprint_residual_ratio
from jaxdiffim.core.masks import bit


def reference_ratio(d, s, mask, x, y, radius):
    """The metric written star by star, as in ip_diffim's computeDifferenceImageMetrics."""
    bad = bit("EDGE") | bit("NO_DATA") | bit("BAD") | bit("SAT")
    good = ((mask & bad) == 0) & np.isfinite(d) & np.isfinite(s)
    absd = np.abs(d)
    s = np.abs(s - np.median(s[good]))
    h, w = d.shape
    yy, xx = np.mgrid[0:h, 0:w]
    feet = [
        (xx - round(xc)) ** 2 + (yy - round(yc)) ** 2 <= radius**2
        for xc, yc in zip(x, y, strict=True)
    ]
    stars = np.any(feet, axis=0)
    sky = absd[good & ~stars].mean()
    ratios = []
    disc = np.hypot(*np.mgrid[-9:10, -9:10]) <= radius
    for foot in feet:
        ok = foot & good
        if ok.sum() >= max(3, disc.sum() / 2) and s[ok].mean() > 0:
            ratios.append(abs(absd[ok].mean() - sky) / s[ok].mean())
    return np.array(ratios)


def test_matches_the_per_star_loop():
    rng = np.random.default_rng(4)
    h, w = 90, 120
    d = rng.normal(size=(h, w))
    s = rng.normal(size=(h, w)) + 5.0
    # some at and beyond the edge (those with under half of their footprint on the image
    # are left out)
    x = np.r_[rng.uniform(0, w - 1, 25), -3.0, 2.0, w + 1.0, w + 2.0]
    y = np.r_[rng.uniform(0, h - 1, 25), 10.0, 1.0, 40.0, h + 2.0]
    for xc, yc in zip(x[:25], y[:25], strict=True):
        d[int(yc), int(xc)] += 30.0
        s[int(yc), int(xc)] += 100.0
    mask = np.zeros((h, w), np.int32)
    mask[:, 50] = bit("BAD")
    mask[:5, :] |= bit("EDGE")
    d[60, 60] = np.nan
    got = footprint_residual_ratio(d, s, mask, x, y, 4.5)
    want = reference_ratio(d, s, mask, x, y, 4.5)
    np.testing.assert_allclose(got.ratios, want, rtol=2e-5)  # float32
    assert got.mean == pytest.approx(want.mean(), rel=2e-5)
    assert got.std == pytest.approx(want.std(), rel=2e-4)


def test_a_star_on_the_rim_of_a_masked_region_is_left_out():
    """Its few unmasked pixels do not decide its ratio (nor fail the QA)."""
    rng = np.random.default_rng(5)
    h, w = 60, 60
    d = rng.normal(size=(h, w))
    s = rng.normal(size=(h, w)) + 5.0
    mask = np.zeros((h, w), np.int32)
    mask[:, :32] = bit("NO_DATA")  # the star at x = 30 keeps a sliver of 2 columns
    d[25:36, 32:34] += 50.0  # the convolved template's edge
    s[30, 30] += 100.0
    got = footprint_residual_ratio(d, s, mask, [30.0, 45.0], [30.0, 30.0], 4.5)
    assert got.ratios.size == 1  # only the star with a whole footprint is measured
    assert got.mean < 0.5
