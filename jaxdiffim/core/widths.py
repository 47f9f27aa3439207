"""Alard-Lupton Gaussian widths as trainable numbers: a safe parametrisation and a guard.

The widths enter the fit as a traced array, so they can be tuned by gradient. Two things go
wrong for an optimiser that moves them freely: a width near zero samples its Gaussian as a
single pixel (the polynomial terms vanish and the renormalised basis is 0/0), and two equal
widths make two sets of basis images identical (a singular system). This module gives

* :func:`widths_from_parameters` / :func:`parameters_from_widths`: unconstrained parameters
  ``u`` (any real numbers, what optax updates) mapped to widths that are at least
  :data:`MIN_WIDTH` and strictly increasing by at least a factor ``1 + MIN_SEPARATION``;
* :func:`guard_widths`: inside the fit, widths below :data:`MIN_WIDTH` or closer than
  :data:`DEGENERATE_SEPARATION` (relative) are replaced by ip_diffim's defaults (no derivative)
  and the fit reports ``status.DEGENERATE_BASIS`` instead of returning NaN.

Not in ip_diffim (its widths are configuration, never optimised).
"""

import jax
import jax.numpy as jnp
import numpy as np

from .basis import WIDTH_RULE

__all__ = [
    "DEGENERATE_SEPARATION",
    "MIN_SEPARATION",
    "MIN_WIDTH",
    "guard_widths",
    "parameters_from_widths",
    "widths_from_parameters",
]

#: Narrowest usable Gaussian width in pixels (ip_diffim's ``minSigDeconv`` is 0.4).
MIN_WIDTH = 0.2
#: Smallest relative step between consecutive widths from :func:`widths_from_parameters`.
MIN_SEPARATION = 0.02
#: Consecutive widths closer than this (relative) make the basis degenerate.
DEGENERATE_SEPARATION = 1e-3


def widths_from_parameters(params):
    """Positive, increasing widths from unconstrained parameters (differentiable).

    ``sigma_0 = MIN_WIDTH + softplus(u_0)``, ``sigma_i = sigma_{i-1} (1 + MIN_SEPARATION +
    softplus(u_i))``.

    Parameters
    ----------
    params : Array, shape (n,)

    Returns
    -------
    Array, shape (n,)
        Widths in pixels.
    """
    params = jnp.asarray(params)
    first = MIN_WIDTH + jax.nn.softplus(params[:1])
    steps = 1.0 + MIN_SEPARATION + jax.nn.softplus(params[1:])
    return first[0] * jnp.concatenate([jnp.ones(1, first.dtype), jnp.cumprod(steps)])


def parameters_from_widths(widths):
    """Inverse of :func:`widths_from_parameters` (numpy, float64).

    Raises
    ------
    ValueError
        If the widths are not increasing by at least ``MIN_SEPARATION`` or below ``MIN_WIDTH``.
    """
    widths = np.asarray(widths, np.float64)
    steps = widths[1:] / widths[:-1] - 1 - MIN_SEPARATION
    excess = np.concatenate([[widths[0] - MIN_WIDTH], steps])
    if np.any(excess <= 0):
        raise ValueError(
            f"widths {widths.tolist()} must be > {MIN_WIDTH} px and increase by more than "
            f"{MIN_SEPARATION:.0%} each."
        )
    return np.log(np.expm1(excess))


def guard_widths(sigmas):
    """Replace degenerate widths by ip_diffim's defaults (traced; no derivative then).

    Parameters
    ----------
    sigmas : Array, shape (n,)

    Returns
    -------
    widths : Array, shape (n,)
        ``sigmas`` itself when usable.
    degenerate : Array of bool, shape ()
        A width is below :data:`MIN_WIDTH` (or not finite) or two consecutive-in-size widths
        are within :data:`DEGENERATE_SEPARATION` of each other.
    """
    n = sigmas.shape[0]
    ordered = jnp.sort(sigmas)
    close = jnp.any(ordered[1:] <= ordered[:-1] * (1.0 + DEGENERATE_SEPARATION)) if n > 1 else False
    degenerate = ~jnp.all(jnp.isfinite(sigmas)) | jnp.any(sigmas < MIN_WIDTH) | close
    # the unselected branch gets a zero cotangent: no derivative flows when degenerate
    return jnp.where(degenerate, _fallback(n, sigmas.dtype), sigmas), degenerate


def _fallback(n, dtype):
    """ip_diffim's default widths, extended geometrically (×2) to ``n`` Gaussians."""
    base = list(WIDTH_RULE["sig_gauss"])
    while len(base) < n:
        base.append(2.0 * base[-1])
    return jnp.asarray(base[:n], dtype)
