"""Quality metrics of a difference image (ip_diffim.md §2.10).

Port of ``utils.computeDifferenceImageMetrics`` and of the bad-subtraction check of
``DetectAndMeasureTask.calculateMetrics``: for every star, the footprint residual ratio
``|mean |D| - sky| / mean |S|`` over a circular footprint, its mean and standard deviation over
the stars, and :class:`BadSubtractionError` above 0.2 (mean) or 0.4 (std).

Deliberate differences: footprints are circles of radius ``radius`` around the given positions
(ip_diffim uses the detection footprints); ``sky`` is the mean of ``|D|`` over every unmasked
pixel outside the footprints (ip_diffim: the mean over sky-source footprints, else the median of
``|D|``, which is biased: for Gaussian noise mean |D| exceeds median |D| by 0.12 σ, enough to
put a perfect subtraction of faint stars above ratio 0.02); and the science image's median is
subtracted before ``mean |S|`` so that a sky level left in the science image does not dilute the
ratio (the median of a regular subsample above a million pixels). The per-star ratios are
computed on the device by :func:`jaxdiffim.core.quality.footprint_ratios` in float32 (inside
the subtraction program; :func:`footprint_residual_ratio` runs it on its own); this module adds
the host-side summary and the QA check.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core.quality import footprint_ratios
from ..errors import BadSubtractionError

__all__ = [
    "FootprintRatio",
    "footprint_residual_ratio",
    "check_subtraction_quality",
    "qa_table",
    "summarize_ratios",
]


class FootprintRatio(NamedTuple):
    """Mean and standard deviation of the per-star residual ratios, and the ratios."""

    mean: float
    std: float
    ratios: np.ndarray


def qa_table(x, y):
    """The star table of :func:`jaxdiffim.core.quality.footprint_ratios`, padded to a capacity.

    The capacity is the next power of two (at least 16), so that catalogues of similar sizes
    share one compiled program.

    Returns
    -------
    x, y : numpy.ndarray, shape (capacity,), float32
    valid : numpy.ndarray of bool, shape (capacity,)
    """
    x = np.atleast_1d(np.asarray(x, float))
    y = np.atleast_1d(np.asarray(y, float))
    n = x.size
    capacity = max(16, 1 << max(0, math.ceil(math.log2(max(n, 1)))))
    pad = capacity - n
    valid = np.arange(capacity) < n
    return (
        np.pad(x, (0, pad)).astype(np.float32),
        np.pad(y, (0, pad)).astype(np.float32),
        valid,
    )


def summarize_ratios(ratios, used):
    """:class:`FootprintRatio` from the per-star ratios and their ``used`` flags."""
    ratios = np.asarray(ratios, float)[np.asarray(used, bool)]
    if ratios.size == 0:
        return FootprintRatio(float("nan"), float("nan"), ratios)
    return FootprintRatio(float(ratios.mean()), float(ratios.std()), ratios)


@functools.partial(jax.jit, static_argnames=("square",))
def _ratios(difference, science, mask, x, y, valid, radius, square):
    return footprint_ratios(difference, science, mask, x, y, valid, radius, square=square)


def footprint_residual_ratio(difference, science, mask, x, y, radius):
    """Per-star ``|mean|D| - sky| / mean|S - median(S)|`` over circular footprints.

    ``sky`` is the mean ``|D|`` over the unmasked pixels outside every footprint. Computed in
    float32 by :func:`jaxdiffim.core.quality.footprint_ratios`.

    Parameters
    ----------
    difference, science : array_like, shape (H, W)
        Difference and science images (same grid).
    mask : array_like of int, shape (H, W)
        Difference mask; ``EDGE``, ``NO_DATA``, ``BAD`` and ``SAT`` pixels are ignored.
    x, y : array_like, shape (n,)
        Star positions in array pixels.
    radius : float
        Footprint radius in pixels.

    Returns
    -------
    FootprintRatio
        NaN mean/std when no star has a usable footprint.
    """
    x, y, valid = qa_table(x, y)
    ratios, used = _ratios(
        jnp.asarray(difference, jnp.float32),
        jnp.asarray(science, jnp.float32),
        jnp.asarray(mask, jnp.int32),
        x,
        y,
        valid,
        jnp.float32(radius),
        int(math.ceil(radius)),
    )
    return summarize_ratios(ratios, used)


def check_subtraction_quality(ratio, mean_threshold=0.2, std_threshold=0.4):
    """Raise :class:`BadSubtractionError` when the residual ratio exceeds its thresholds."""
    if ratio.mean > mean_threshold or ratio.std > std_threshold:
        raise BadSubtractionError(
            f"Bad subtraction: footprint residual ratio mean {ratio.mean:.3f} (limit "
            f"{mean_threshold}) and std {ratio.std:.3f} (limit {std_threshold}); stars are left "
            "in the difference. Check the template's PSF, astrometric alignment and coverage, or "
            "raise bad_subtraction_ratio_threshold / bad_subtraction_variation_threshold."
        )
