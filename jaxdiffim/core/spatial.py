"""Spatial model functions: afw ``Chebyshev1Function2`` and ``PolynomialFunction2`` terms.

Terms are ordered as afw orders them, by total degree and then by the power of y:
``1, x, y, x², xy, y², x³, x²y, ...`` (Chebyshev: ``T0T0, T1(x)T0, T0T1(y), T2(x), ...``).
Every term is a product ``f_a(x) f_b(y)`` of 1-D functions, which :mod:`jaxdiffim.core.convolve`
uses
to weight whole images without building one full-size array per term.

Coordinates are pixel positions in the caller's frame (pixel centres at integers). ``bbox`` is
an inclusive integer box ``(x_min, y_min, x_max, y_max)`` in the same frame, as afw ``Box2I``:
Chebyshev terms map ``Box2D(bbox)``, which spans ``min - 0.5 .. max + 0.5``, onto ``[-1, 1]``.
Ordinary polynomials use the same normalised coordinates (see :func:`normalized_coordinates`).
"""

import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "SPATIAL_MODEL_TYPES",
    "n_spatial_terms",
    "term_powers",
    "normalized_coordinates",
    "basis_1d",
    "spatial_terms",
]

SPATIAL_MODEL_TYPES = ("chebyshev1", "polynomial")


def n_spatial_terms(order):
    """Number of terms of a 2-D function of total ``order``: ``(order+1)(order+2)/2``."""
    return (order + 1) * (order + 2) // 2


def term_powers(order):
    """Static ``(a, b)`` powers of each term, in afw order. Returns two int ndarrays."""
    pairs = [(t - b, b) for t in range(order + 1) for b in range(t + 1)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def normalized_coordinates(coord, lo, hi):
    """Map pixel coordinates onto ``[-1, 1]`` across the inclusive pixel range ``[lo, hi]``.

    Port of afw ``Chebyshev1Function2``'s normalisation over ``Box2D(Box2I)``: the range is
    ``lo - 0.5 .. hi + 0.5``.
    """
    centre = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo + 1.0)
    return (coord - centre) / half


def basis_1d(t, order, kind, xp=jnp):
    """1-D functions ``f_0(t) .. f_order(t)`` stacked on a new leading axis.

    Parameters
    ----------
    t : Array
        Normalised coordinates.
    order : int
        Highest degree (static).
    kind : {"chebyshev1", "polynomial"}
        Chebyshev polynomials of the first kind, or plain powers.
    xp : module
        ``jax.numpy`` (default) or ``numpy`` (host-side evaluation in float64).

    Returns
    -------
    Array, shape (order + 1,) + t.shape
    """
    if kind not in SPATIAL_MODEL_TYPES:
        raise InvalidInputError(
            f"spatial model type must be one of {SPATIAL_MODEL_TYPES}, got {kind!r}."
        )
    out = [xp.ones_like(t)]
    if order >= 1:
        out.append(t)
    for _ in range(2, order + 1):
        out.append(2.0 * t * out[-1] - out[-2] if kind == "chebyshev1" else t * out[-1])
    return xp.stack(out)


def spatial_terms(x, y, order, bbox, kind="chebyshev1", xp=jnp):
    """Values of every spatial term at positions ``(x, y)``.

    Parameters
    ----------
    x, y : array_like
        Pixel positions, any matching shape.
    order : int
        Total order of the spatial model (static).
    bbox : sequence of 4 numbers
        Inclusive pixel box ``(x_min, y_min, x_max, y_max)`` that normalises the coordinates.
    kind : {"chebyshev1", "polynomial"}
    xp : module
        ``jax.numpy`` (default) or ``numpy`` (host-side evaluation, no device program).

    Returns
    -------
    Array, shape x.shape + (n_spatial_terms(order),)
    """
    if order < 0:
        raise InvalidInputError(f"spatial order must be >= 0, got {order}.")
    x = xp.asarray(x)
    y = xp.asarray(y)
    fx = basis_1d(normalized_coordinates(x, bbox[0], bbox[2]), order, kind, xp)
    fy = basis_1d(normalized_coordinates(y, bbox[1], bbox[3]), order, kind, xp)
    a, b = term_powers(order)
    return xp.moveaxis(fx[a] * fy[b], 0, -1)
