"""The footprint residual ratio of a difference image, as a jittable function of arrays.

Jittable core of ip_diffim's ``utils.computeDifferenceImageMetrics`` (ip_diffim.md §2.10): for
each star, ``|mean |D| - sky| / mean |S - median(S)|`` over a circular footprint, ``sky`` being
the mean ``|D|`` over the good pixels outside every footprint. The host-side summary and the QA
policy are in :mod:`jaxdiffim.algorithms.quality`.

Shapes are static: the star table has a fixed capacity with a ``valid`` mask, and the footprint
is cut from a static ``(2 r + 1)²`` square (``r = ceil(radius)``) with the radius itself traced.
The science median is that of a regular subsample above :data:`MEDIAN_PIXELS` good-or-bad
pixels (it only removes a sky level).
"""

import jax
import jax.numpy as jnp
import numpy as np

from .masks import bits
from .stats import masked_quantiles

__all__ = ["MEDIAN_PIXELS", "QA_IGNORE_PLANES", "footprint_ratios"]

#: Pixels with any of these planes are left out of the QA metric.
QA_IGNORE_PLANES = ("EDGE", "NO_DATA", "BAD", "SAT")

#: Above this many pixels the science median comes from a regular subsample.
MEDIAN_PIXELS = 1 << 20


def footprint_ratios(difference, science, mask, x, y, valid, radius, *, square):
    """Per-star footprint residual ratios (jittable; ``square`` static).

    Parameters
    ----------
    difference, science : Array, shape (H, W)
        Difference and science images on one grid (any flux unit).
    mask : Array of int, shape (H, W)
        Difference mask; :data:`QA_IGNORE_PLANES` pixels and non-finite pixels are ignored.
    x, y : Array, shape (n,)
        Star positions in array pixels, rounded half to even to a pixel.
    valid : Array of bool, shape (n,)
        Rows of the table that hold a star.
    radius : float
        Footprint radius in pixels (traced).
    square : int
        Static half-size of the square the footprints are cut from; ``>= ceil(radius)``.

    Returns
    -------
    ratios : Array, shape (n,)
        The ratio of each star; NaN where it is undefined.
    used : Array of bool, shape (n,)
        Stars with good pixels over at least half of their footprint disc (at least 3) and a
        positive ``mean |S - median(S)|``. (A star on the rim of a masked region, say a
        template's NO_DATA wedge, kept its few unmasked pixels on the side where the convolved
        template's edge leaves a residual, and one such star had a ratio of 16 and failed the
        whole QA.)
    """
    d = difference
    s = science.astype(d.dtype)
    good = ((mask & bits(QA_IGNORE_PLANES)) == 0) & jnp.isfinite(d) & jnp.isfinite(s)
    absd = jnp.where(good, jnp.abs(d), 0.0)
    step = max(1, -(-s.size // MEDIAN_PIXELS))
    median = masked_quantiles(s.ravel()[::step], good.ravel()[::step], (0.5,))[0]
    abss = jnp.abs(s - jnp.where(jnp.isfinite(median), median, 0.0))

    offsets = np.arange(-square, square + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    disc = jnp.asarray(dx**2 + dy**2, d.dtype) <= radius * radius
    xi = jnp.round(x).astype(jnp.int32)
    yi = jnp.round(y).astype(jnp.int32)
    yy = yi[:, None] + jnp.asarray(dy, jnp.int32)[None, :]
    xx = xi[:, None] + jnp.asarray(dx, jnp.int32)[None, :]
    height, width = d.shape
    inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
    inside = inside & disc[None, :] & valid[:, None]
    yy, xx = jnp.where(inside, yy, 0), jnp.where(inside, xx, 0)
    stars = jnp.zeros(d.shape, bool).at[yy, xx].max(inside)
    sky_pixels = good & ~stars
    n_sky = jnp.sum(sky_pixels)

    def all_in_footprints(_):  # every good pixel lies in a footprint: the median |D| instead
        values = jnp.where(good, jnp.abs(d), 0.0).ravel()[::step]
        return masked_quantiles(values, good.ravel()[::step], (0.5,))[0].astype(absd.dtype)

    sky = jax.lax.cond(
        n_sky > 0,
        lambda _: jnp.sum(jnp.where(sky_pixels, absd, 0.0)) / jnp.maximum(n_sky, 1),
        all_in_footprints,
        None,
    )
    ok = inside & good[yy, xx]
    count = jnp.sum(ok, axis=1)
    safe = jnp.maximum(count, 1).astype(d.dtype)
    mean_d = jnp.sum(jnp.where(ok, absd[yy, xx], 0.0), axis=1) / safe
    denom = jnp.sum(jnp.where(ok, abss[yy, xx], 0.0), axis=1) / safe
    least = jnp.maximum(3.0, 0.5 * jnp.sum(disc))
    used = valid & (count >= least) & (denom > 0)
    ratios = jnp.where(used, jnp.abs(mean_d - sky) / jnp.where(used, denom, 1.0), jnp.nan)
    return ratios, used
