"""The detector's sky: a binned, iterated median background on a coarse then a fine grid.

Used by :func:`jaxdiffim.algorithms.detection.detect_sources` inside one jitted program:
block medians by bisection (no sort), empty bins filled from their neighbours, and a separable
bilinear interpolation back to the pixel grid (the scheme of afw's ``BackgroundMI``, simplified).
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "sky_layout",
    "nanmedian_last",
    "bin_blocks",
    "fill_empty",
    "coarse_sky_grid",
    "fine_sky_grid",
    "interpolate",
]

#: Robust sigma of a normal distribution per median absolute deviation.
_MAD_TO_SIGMA = 1.482602218505602
#: The coarse sky pass samples about this many pixels per bin and axis.
_SKY_COARSE_SAMPLES = 16
#: Bisection steps of the bin medians.
_MEDIAN_ITERATIONS = 32


def sky_layout(length, bin_size):
    """Sky bins along one axis.

    ``round(length / bin_size)`` (at least 1) bins of ``size`` pixels (the last one may stick
    out of the image). The coarse pass samples every ``stride`` pixels (about
    ``_SKY_COARSE_SAMPLES`` per axis), the fine pass every pixel.

    Returns
    -------
    n_bins, size, stride : int
    coarse, fine : tuple (lower bin index, upper-bin weight) per pixel, for the bin centres
        of each pass (the mean coordinate of its samples inside the image).
    """
    n_bins = max(1, int(round(length / bin_size)))
    base = -(-length // n_bins)
    stride = max(1, base // _SKY_COARSE_SAMPLES)
    size = stride * -(-base // stride)

    def weights(step):
        samples = np.arange(n_bins)[:, None] * size + step * np.arange(size // step)[None, :]
        inside = samples < length
        centres = (samples * inside).sum(axis=1) / inside.sum(axis=1)
        pix = np.arange(length, dtype=np.float64)
        if n_bins == 1:
            return np.zeros(length, np.int32), np.zeros(length, np.float32)
        lower = np.clip(np.searchsorted(centres, pix) - 1, 0, n_bins - 2)
        weight = (pix - centres[lower]) / (centres[lower + 1] - centres[lower])  # extrapolates
        return lower.astype(np.int32), weight.astype(np.float32)

    return n_bins, size, stride, weights(stride), weights(1)


def nanmedian_last(values, iterations=_MEDIAN_ITERATIONS):
    """Lower median along the last axis ignoring NaN, by bisection on the value (NaN if empty).

    Each step counts the values below the midpoint of a bracket that starts at the minimum and
    maximum; after ``iterations`` halvings the bracket is ``range / 2**iterations`` wide. On the
    CPU this is several times faster than ``jnp.nanmedian``, which sorts.
    """
    finite = jnp.isfinite(values)
    count = jnp.sum(finite, axis=-1)
    target = (count + 1) // 2
    lo = jnp.min(jnp.where(finite, values, jnp.inf), axis=-1)
    hi = jnp.max(jnp.where(finite, values, -jnp.inf), axis=-1)

    def step(_, bracket):
        lo, hi = bracket
        mid = lo + 0.5 * (hi - lo)
        below = jnp.sum(values <= mid[..., None], axis=-1)  # NaN compares False
        enough = below >= target
        return jnp.where(enough, lo, mid), jnp.where(enough, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iterations, step, (lo, hi))
    return jnp.where(count > 0, hi, jnp.nan)


def bin_blocks(values, n_bins, size, stride):
    """``values`` (NaN = unusable) cut into bins: shape (ny, nx, samples per bin)."""
    (ny, nx), (sy, sx), (ty, tx) = n_bins, size, stride
    height, width = values.shape
    pad = ((0, ny * sy - height), (0, nx * sx - width))
    sub = jnp.pad(values, pad, constant_values=jnp.nan)[::ty, ::tx]
    my, mx = sy // ty, sx // tx
    return sub.reshape(ny, my, nx, mx).transpose(0, 2, 1, 3).reshape(ny, nx, my * mx)


def fill_empty(grid, fallback):
    """Replace NaN bins by the median of the others, or ``fallback`` if all are NaN."""
    valid = jnp.isfinite(grid)
    fill = jnp.nanmedian(jnp.where(valid, grid, jnp.nan))
    fill = jnp.where(jnp.isfinite(fill), fill, fallback)
    return jnp.where(valid, grid, fill)


def coarse_sky_grid(values, n_bins, size, stride):
    """Coarse pass: per-bin median after one 3-sigma MAD clip, and the MAD sigma per bin."""
    blocks = bin_blocks(values, n_bins, size, stride)
    med = nanmedian_last(blocks)[..., None]
    dev = jnp.abs(blocks - med)
    sigma = _MAD_TO_SIGMA * nanmedian_last(dev)
    clipped = jnp.where(dev <= 3.0 * sigma[..., None], blocks, jnp.nan)
    return fill_empty(nanmedian_last(clipped), 0.0), fill_empty(sigma, 0.0)


def fine_sky_grid(residual, sigma, n_bins, size):
    """Fine pass: per-bin 3-sigma-clipped mean of a residual, clipped twice (0 for empty bins).

    The sums run over axes 1 and 3 of the (ny, size_y, nx, size_x) view, not over the last
    axis of :func:`bin_blocks`' transposed one: XLA fused that transpose with the residual's
    producers into a program 12x slower (4096², 2 cores: 2.65 s against 0.22 s).
    """
    (ny, nx), (sy, sx) = n_bins, size
    height, width = residual.shape
    pad = ((0, ny * sy - height), (0, nx * sx - width))
    blocks = jnp.pad(residual, pad, constant_values=jnp.nan).reshape(ny, sy, nx, sx)
    usable = jnp.isfinite(blocks)
    values = jnp.where(usable, blocks, 0.0)
    limit = 3.0 * sigma[:, None, :, None]
    centre = jnp.zeros((ny, nx), blocks.dtype)
    for _ in range(2):
        kept = usable & (jnp.abs(values - centre[:, None, :, None]) <= limit)
        count = jnp.sum(kept, axis=(1, 3))
        total = jnp.sum(jnp.where(kept, values, 0.0), axis=(1, 3))
        centre = jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)
    return centre


def interpolate(grid, weights_y, weights_x):
    """Bilinear interpolation of a bin grid to every pixel (linear extrapolation at the border)."""
    (iy, wy), (ix, wx) = weights_y, weights_x
    up = 1 if grid.shape[0] > 1 else 0
    right = 1 if grid.shape[1] > 1 else 0
    rows = (1.0 - wy)[:, None] * grid[iy] + wy[:, None] * grid[iy + up]
    return (1.0 - wx)[None, :] * rows[:, ix] + wx[None, :] * rows[:, ix + right]
