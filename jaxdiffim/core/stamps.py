"""Kernel candidates with static shapes, and the stamps cut around them.

A variable number of candidates is padded to a fixed *capacity* (a power of two, at least 32) with
a validity mask, so every candidate count in the same bucket reuses one compiled fit. Padded rows
never contribute: they have ``valid=False`` and their stamps are replaced by zeros before any
arithmetic, so they cannot produce NaN values or NaN gradients.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError

__all__ = ["Candidates", "bucket_capacity", "make_candidates", "cut_stamps", "stamp_inside"]

MIN_CAPACITY = 32


class Candidates(NamedTuple):
    """Fixed-capacity kernel candidates (a pytree).

    Attributes
    ----------
    x, y : Array, shape (capacity,)
        Candidate centres in array pixel coordinates (column, row); stamps are centred on the
        nearest pixel.
    rating : Array, shape (capacity,)
        Priority inside a spatial cell (higher is visited first), e.g. the PSF flux as ip_diffim
        uses for candidates built from sources.
    valid : Array of bool, shape (capacity,)
        False for padding.
    """

    x: jax.Array
    y: jax.Array
    rating: jax.Array
    valid: jax.Array


def bucket_capacity(n):
    """Capacity for ``n`` candidates: the next power of two, at least 32."""
    n = max(int(n), 1)
    return max(MIN_CAPACITY, 1 << (n - 1).bit_length())


def make_candidates(x, y, rating=None, capacity=None):
    """Pad candidate positions to a static capacity (host side).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Candidate centres in array pixel coordinates.
    rating : array_like, shape (n,), optional
        Priority within a cell (default: all equal, so input order decides).
    capacity : int, optional
        Padded length; default :func:`bucket_capacity` of ``n``.

    Returns
    -------
    Candidates
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise InvalidInputError(f"x and y must have the same length, got {x.size} and {y.size}.")
    rating = np.zeros_like(x) if rating is None else np.asarray(rating, dtype=float).ravel()
    if rating.shape != x.shape:
        raise InvalidInputError(f"rating must have one value per candidate ({x.size}).")
    n = x.size
    capacity = bucket_capacity(n) if capacity is None else int(capacity)
    if capacity < n:
        raise InvalidInputError(f"capacity {capacity} is smaller than the {n} candidates.")
    pad = capacity - n
    valid = np.concatenate([np.isfinite(x) & np.isfinite(y), np.zeros(pad, bool)])
    fill = np.zeros(pad)
    return Candidates(
        x=jnp.asarray(np.nan_to_num(np.concatenate([x, fill])).astype(np.float32)),
        y=jnp.asarray(np.nan_to_num(np.concatenate([y, fill])).astype(np.float32)),
        rating=jnp.asarray(np.nan_to_num(np.concatenate([rating, fill])).astype(np.float32)),
        valid=jnp.asarray(valid),
    )


def _centres(candidates):
    cx = jnp.round(candidates.x).astype(jnp.int32)
    cy = jnp.round(candidates.y).astype(jnp.int32)
    return cx, cy


def stamp_inside(candidates, shape, size):
    """True where each candidate's ``size`` x ``size`` stamp lies inside an image of ``shape``."""
    cx, cy = _centres(candidates)
    h = size // 2
    return (cx - h >= 0) & (cy - h >= 0) & (cx + h < shape[1]) & (cy + h < shape[0])


def cut_stamps(image, candidates, size):
    """Cut ``size`` x ``size`` stamps centred on the candidates (jit-able).

    ``lax.dynamic_slice`` clamps out-of-range starts, so a stamp that does not fit is shifted
    into the image; combine with :func:`stamp_inside` to invalidate such candidates.

    Returns
    -------
    Array, shape (capacity, size, size)
    """
    cx, cy = _centres(candidates)
    h = size // 2

    def one(x0, y0):
        return jax.lax.dynamic_slice(image, (y0 - h, x0 - h), (size, size))

    return jax.vmap(one)(cx, cy)
