"""Masked statistics and candidate bookkeeping for kernel-candidate rejection (jit-able).

Ports of the afw/ip_diffim pieces that decide which candidates the fit uses:

* :func:`quantile_masked` and :func:`clipped_mean_std` - afw ``Statistics`` ``MEDIAN`` and
  ``MEANCLIP``/``STDEVCLIP`` with the default control (3 sigma, 3 passes; the first pass is
  centred on the median with half-width ``3 * 0.7413 * IQR``; inclusive bounds; unbiased variance).
* :func:`residual_statistics` - ip_diffim ``ImageStatistics``: mean and unbiased rms of
  ``D / sqrt(var)`` over good pixels.
* :func:`cell_ids` and :func:`visited` - afw ``SpatialCellSet`` cells and
  ``visitCandidates(nMaxPerCell)``: inside each cell, the first ``n`` non-rejected candidates by
  decreasing rating.

Everything works on fixed-length arrays with boolean masks; nothing has a data-dependent shape.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "masked_quantiles",
    "median_by_bisection",
    "IQ_TO_STDEV",
    "quantile_masked",
    "clipped_mean_std",
    "residual_statistics",
    "cell_ids",
    "precedence",
    "visit_window",
    "visited",
]

#: afw's factor from inter-quartile range to the standard deviation of a Gaussian.
IQ_TO_STDEV = 0.741301109252802


def quantile_masked(x, mask, q):
    """Quantile of ``x[mask]`` by linear interpolation at index ``q (n - 1)`` (afw's rule).

    Parameters
    ----------
    x : Array, shape (..., n)
    mask : Array of bool, same shape
    q : float

    Returns
    -------
    Array, shape (...); NaN where no element is selected.
    """
    return _sorted_quantiles(x, mask, (q,))[0]


def _sorted_quantiles(x, mask, qs):
    """:func:`quantile_masked` at each of ``qs`` from one sort; a tuple of arrays."""
    n = jnp.sum(mask, axis=-1)
    srt = jnp.sort(jnp.where(mask, x, jnp.inf), axis=-1)
    out = []
    for q in qs:
        pos = q * jnp.maximum(n - 1, 0).astype(x.dtype)
        lo = jnp.floor(pos).astype(jnp.int32)
        hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
        frac = pos - lo
        v_lo = jnp.take_along_axis(srt, lo[..., None], axis=-1)[..., 0]
        v_hi = jnp.take_along_axis(srt, hi[..., None], axis=-1)[..., 0]
        v_hi = jnp.where(frac > 0, v_hi, v_lo)  # avoid inf * 0
        out.append(jnp.where(n > 0, v_lo + frac * (v_hi - v_lo), jnp.nan))
    return tuple(out)


def _mean_var(x, mask):
    n = jnp.sum(mask, axis=-1)
    mean = jnp.sum(jnp.where(mask, x, 0.0), axis=-1) / jnp.maximum(n, 1)
    dev = jnp.where(mask, x - mean[..., None], 0.0)
    var = jnp.sum(dev * dev, axis=-1) / jnp.maximum(n - 1, 1)
    return mean, jnp.where(n > 1, var, jnp.where(n == 1, 0.0, jnp.nan)), n


def clipped_mean_std(x, mask, n_sigma=3.0, n_iter=3, bisect=False):
    """afw ``MEANCLIP`` and ``STDEVCLIP`` of ``x[mask]``.

    The first pass keeps ``|x - median| <= n_sigma * 0.7413 * IQR``; each later pass keeps
    ``|x - mean| <= n_sigma * std`` of the previous pass. Means and unbiased variances.

    ``bisect`` finds the quartiles by bisection (:func:`masked_quantiles`, float32 values)
    instead of a sort: much faster for large samples on a CPU.

    Returns
    -------
    mean, std : Array, shape (...)
        NaN when nothing is selected; a single value gives ``(value, 0)``.
    """
    if bisect:  # large 1-D samples: order statistics without a sort (float32)
        median, q75, q25 = jnp.moveaxis(masked_quantiles(x, mask, (0.5, 0.75, 0.25)), -1, 0)
    else:
        median, q75, q25 = _sorted_quantiles(x, mask, (0.5, 0.75, 0.25))
    iqr = q75 - q25
    # sums of squares in units of a power of two near the data's magnitude (exact scaling):
    # a variance plane of 1e24 squared would overflow float32
    ref = jnp.maximum(jnp.abs(median), iqr)
    ref = jnp.where(jnp.isfinite(ref) & (ref > 0), ref, 1.0)
    exponent = jnp.round(jnp.log2(ref))
    scale, inv = jnp.exp2(exponent).astype(x.dtype), jnp.exp2(-exponent).astype(x.dtype)
    y = x * inv[..., None]  # products by one factor: a value equal to the median stays equal
    centre, half = median * inv, n_sigma * IQ_TO_STDEV * iqr * inv
    mean = var = centre
    for _ in range(n_iter):
        keep = mask & (jnp.abs(y - centre[..., None]) <= half[..., None])
        mean, var, _ = _mean_var(y, keep)
        centre, half = mean, n_sigma * jnp.sqrt(var)
    return mean * scale, jnp.sqrt(var) * scale


def residual_statistics(diff, variance, good):
    """Mean and unbiased rms of ``diff / sqrt(variance)`` over good pixels (``ImageStatistics``).

    Parameters
    ----------
    diff, variance : Array, shape (N, P)
    good : Array of bool, shape (N, P)
        Pixels to use; those with non-positive or non-finite variance are dropped too.

    Returns
    -------
    mean, rms : Array, shape (N,); NaN where fewer than 1 (mean) or 2 (rms) pixels remain.
    """
    good = good & (variance > 0) & jnp.isfinite(variance)
    z = diff / jnp.sqrt(jnp.where(good, variance, 1.0))
    mean, var, n = _mean_var(z, good)
    mean = jnp.where(n > 0, mean, jnp.nan)
    return mean, jnp.sqrt(jnp.where(n > 1, var, jnp.nan))


def cell_ids(x, y, bbox, size_cell_x, size_cell_y):
    """Row-major index of the afw spatial cell holding each candidate.

    Cells of ``size_cell_x`` x ``size_cell_y`` pixels tile ``bbox`` = ``(x0, y0, x1, y1)``
    (inclusive) from its minimum corner; the last row and column absorb the remainder. A candidate
    belongs to the cell holding its nearest pixel.
    """
    nx = -(-(bbox[2] - bbox[0] + 1) // size_cell_x)
    ny = -(-(bbox[3] - bbox[1] + 1) // size_cell_y)
    ix = jnp.floor((jnp.floor(x + 0.5) - bbox[0]) / size_cell_x).astype(jnp.int32)
    iy = jnp.floor((jnp.floor(y + 0.5) - bbox[1]) / size_cell_y).astype(jnp.int32)
    return jnp.clip(iy, 0, ny - 1) * nx + jnp.clip(ix, 0, nx - 1)


def precedence(cell, rating):
    """``ahead[c, d]``: candidate ``d`` is visited before ``c`` in ``c``'s cell.

    Within a cell, candidates are ordered by decreasing rating; ties go to the later candidate
    (afw's ``lower_bound`` insertion).
    """
    idx = jnp.arange(cell.shape[0])
    order = (rating[None, :] > rating[:, None]) | (
        (rating[None, :] == rating[:, None]) & (idx[None, :] > idx[:, None])
    )
    return order & (cell[None, :] == cell[:, None])


def visit_window(pool, ahead, n_per_cell):
    """True for every candidate with fewer than ``n_per_cell`` members of ``pool`` ahead of it.

    ``n_per_cell <= 0`` (static) means no limit.
    """
    if n_per_cell <= 0:
        return jnp.ones_like(pool)
    # a masked count, not an int32 matmul: the latter's batching under shard_map inside a loop
    # trips JAX's varying-axis check (jax 0.10)
    return jnp.sum(ahead & pool[None, :], axis=1, dtype=jnp.int32) < n_per_cell


def visited(eligible, cell, rating, n_per_cell):
    """Candidates that ``visitCandidates(n_per_cell)`` visits: the first ``n`` eligible per cell.

    Parameters
    ----------
    eligible : Array of bool, shape (N,)
        Valid and not rejected.
    cell : Array of int, shape (N,)
    rating : Array, shape (N,)
    n_per_cell : int (static)

    Returns
    -------
    Array of bool, shape (N,)
    """
    return eligible & visit_window(eligible, precedence(cell, rating), n_per_cell)


_INT32_MAX = np.iinfo(np.int32).max


_INT32_MIN = np.iinfo(np.int32).min


def _to_key(x):
    """Order-preserving map of float32 values to int32 keys (finite values; -0 sorts before +0)."""
    b = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    return jnp.where(b >= 0, b, b ^ jnp.int32(_INT32_MAX))


def _from_key(k):
    """Inverse of :func:`_to_key`."""
    b = jnp.where(k >= 0, k, k ^ jnp.int32(_INT32_MAX))
    return jax.lax.bitcast_convert_type(b, jnp.float32)


def median_by_bisection(x, valid):
    """The afw-rule median of the valid values of ``x`` along the last axis, differentiable.

    The order statistics are found by :func:`masked_quantiles`' bisection on ``x`` rounded to
    float32 (no sort); the result is then the mean of the entries of ``x`` (any float dtype) that
    round to them, so that it keeps ``x``'s precision and its derivative is that of the sorted
    median (ties share it). Rows without valid values give NaN.

    Parameters
    ----------
    x : Array, shape (..., m)
    valid : Array of bool, shape (..., m)
        Values to use; they must be finite.

    Returns
    -------
    Array, shape (...), dtype of ``x``.
    """
    x32 = x.astype(jnp.float32)
    v_lo, v_hi, frac, n = _order_statistics(x32, valid, (0.5,))

    def pick(v):
        same = valid & (x32 == v)  # v broadcasts over the last axis
        total = jnp.sum(jnp.where(same, x, 0.0), axis=-1)
        return total / jnp.maximum(jnp.sum(same, axis=-1), 1).astype(x.dtype)

    lo, hi = pick(v_lo), pick(v_hi)
    frac = frac[..., 0].astype(x.dtype)
    value = jnp.where(frac > 0, lo + frac * (hi - lo), lo)
    return jnp.where(n > 0, value, jnp.nan)


def masked_quantiles(values, valid, qs):
    """afw-rule quantiles (linear interpolation at index ``q (n - 1)``) of the valid values.

    Exact order statistics found without sorting (XLA's CPU sort is slow): a bisection on the
    int32 keys of the float32 values, counting the values at or below the midpoint at each step,
    finds the ``floor(q (n - 1))``-th smallest value (at most 32 passes); one more pass gives the
    next one for the interpolation.

    Parameters
    ----------
    values : Array, shape (..., m)
    valid : Array of bool, shape (..., m)
        Values to use; they must be finite.
    qs : tuple of float
        Quantiles in [0, 1] (static).

    Returns
    -------
    Array, shape (..., len(qs)), float32; NaN where no value is valid.
    """
    v_lo, v_hi, frac, n = _order_statistics(values, valid, qs)
    v_hi = jnp.where(frac > 0, v_hi, v_lo)
    return jnp.where(n[..., None] > 0, v_lo + frac * (v_hi - v_lo), jnp.nan)


def _order_statistics(values, valid, qs):
    """The two order statistics around each quantile of :func:`masked_quantiles` (float32,
    shape (..., len(qs)) each), the interpolation fractions and the valid counts (..., )."""
    keys = jnp.where(valid, _to_key(values), _INT32_MAX)
    n = jnp.sum(valid, axis=-1)
    last = jnp.maximum(n - 1, 0)[..., None]
    pos = jnp.asarray(qs, jnp.float32) * last.astype(jnp.float32)
    rank = jnp.minimum(jnp.floor(pos).astype(jnp.int32), last)
    frac = pos - rank
    shape = rank.shape
    lo0 = jnp.broadcast_to(jnp.min(keys, axis=-1)[..., None], shape)
    hi0 = jnp.broadcast_to(jnp.max(jnp.where(valid, keys, _INT32_MIN), axis=-1)[..., None], shape)
    lo0 = jnp.minimum(lo0, hi0)  # rows without valid values: nothing to search

    def count_le(bound):
        return jnp.sum(keys[..., None, :] <= bound[..., None], axis=-1)

    def cond(c):
        return jnp.any(c[0] < c[1])

    def body(c):
        lo, hi = c
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        ok = count_le(mid) >= rank + 1
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    k_lo, _ = jax.lax.while_loop(cond, body, (lo0, hi0))
    above = jnp.min(
        jnp.where(keys[..., None, :] > k_lo[..., None], keys[..., None, :], _INT32_MAX), axis=-1
    )
    k_hi = jnp.where(count_le(k_lo) >= rank + 2, k_lo, above)
    v_lo, v_hi = _from_key(k_lo), _from_key(k_hi)
    return v_lo, v_hi, frac, n
