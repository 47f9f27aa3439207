"""Held-out kernel stars: a split of the candidates and a differentiable residual metric.

A kernel fitted to some stars is judged on others: :func:`split_candidates` holds out every
``every``-th valid candidate (static capacity, masks only), and :func:`heldout_chi2` measures
the difference image on the held-out stars' stamps as a reduced χ² (``D² / V`` per pixel). It
is a smooth function of the difference image, so ``jax.grad`` of it with respect to basis
widths, λ or the images works through :func:`jaxdiffim.core.pipeline.subtract_images`. Used
by ``experiments/tune_basis.py``; :mod:`jaxdiffim.core.cross_validation` scores held-out stars
the same way inside the fit (without derivatives) to choose the convolution direction.
"""

import jax.numpy as jnp

from .stamps import cut_stamps, stamp_inside

__all__ = ["heldout_chi2", "split_candidates"]


def split_candidates(candidates, every=4, offset=0):
    """Split candidates into a fitting set and a held-out set (jittable; shapes unchanged).

    Parameters
    ----------
    candidates : Candidates
    every : int
        Hold out one valid candidate in ``every`` (static).
    offset : int
        Which one of each ``every`` (static, ``0 <= offset < every``): different offsets give
        disjoint held-out sets (folds).

    Returns
    -------
    fit, heldout : Candidates
        The same arrays with complementary ``valid`` masks.
    """
    rank = jnp.cumsum(candidates.valid) - 1  # index among the valid candidates
    held = candidates.valid & (rank % every == offset)
    return (
        candidates._replace(valid=candidates.valid & ~held),
        candidates._replace(valid=held),
    )


def heldout_chi2(difference, variance, candidates, half, mask=None):
    """Mean reduced χ² of the difference on the candidates' stamps (differentiable).

    Parameters
    ----------
    difference, variance : Array, shape (H, W)
        Difference image and its variance (units²).
    candidates : Candidates
        The held-out stars (e.g. the second output of :func:`split_candidates`).
    half : int
        Stamps are ``2 half + 1`` pixels on a side (static).
    mask : Array of bool, shape (H, W), optional
        Pixels to leave out (bad, saturated, no data).

    Returns
    -------
    Array, shape ()
        ``mean over stars of (sum D²/V) / n_pixels``; 1 for pure noise. NaN if no star has a
        stamp inside the image with a usable pixel.
    """
    size = 2 * half + 1
    good = jnp.isfinite(difference) & jnp.isfinite(variance) & (variance > 0)
    if mask is not None:
        good = good & ~mask
    safe_v = jnp.where(good, variance, 1.0)
    chi = jnp.where(good, difference, 0.0) ** 2 / safe_v
    chi_stamps = cut_stamps(chi, candidates, size)
    n_stamps = cut_stamps(good.astype(chi.dtype), candidates, size)
    n = jnp.sum(n_stamps, axis=(1, 2))
    use = candidates.valid & stamp_inside(candidates, difference.shape, size) & (n > 0)
    per_star = jnp.sum(chi_stamps, axis=(1, 2)) / jnp.where(use, n, 1.0)
    return jnp.sum(jnp.where(use, per_star, 0.0)) / jnp.sum(use)
