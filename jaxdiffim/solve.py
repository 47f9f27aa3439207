"""Symmetric positive-definite solves with implicit derivatives, and condition numbers.

ip_diffim solves with Eigen's ``FullPivLU`` in double precision and falls back to an
eigen-decomposition pseudo-inverse when the matrix is not invertible (``KernelSolution::solve``).
Here: symmetrise, Jacobi-scale (``D^-1/2 M D^-1/2``, which cuts the condition number of an AL
system by orders of magnitude), Cholesky through ``jax.scipy.linalg.solve(assume_a="pos")`` — a
``lax.custom_linear_solve``, so derivatives are implicit (the adjoint solve reuses the
factorisation) — and, if that gives a non-finite answer, the same pseudo-inverse fallback on a
``stop_gradient`` matrix so no NaN derivative can leak from a degenerate eigen-decomposition.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

__all__ = ["SolveResult", "jacobi_cholesky_solve", "solve_with_fallback", "condition_number"]


class SolveResult(NamedTuple):
    """Solution of ``M x = b``.

    Attributes
    ----------
    x : Array, shape (n,)
    used_fallback : Array of bool, shape ()
        True when Cholesky failed and the pseudo-inverse was used.
    finite : Array of bool, shape ()
        The returned solution is finite.
    """

    x: jax.Array
    used_fallback: jax.Array
    finite: jax.Array


def _scale(m):
    d = jnp.diagonal(m)
    return jnp.sqrt(jnp.where(d > 0, d, 1.0))


def jacobi_cholesky_solve(m, b):
    """Solve SPD ``m x = b`` by a Jacobi-scaled Cholesky factorisation (implicit derivatives).

    Parameters
    ----------
    m : Array, shape (n, n)
    b : Array, shape (n,)

    Returns
    -------
    Array, shape (n,); NaN where ``m`` is not numerically positive definite.
    """
    m = 0.5 * (m + m.T)
    s = _scale(m)
    ms = m / (s[:, None] * s[None, :])
    return jsl.solve(ms, b / s, assume_a="pos") / s


def _pinv_solve(m, b):
    m = jax.lax.stop_gradient(0.5 * (m + m.T))
    s = _scale(m)
    ms = m / (s[:, None] * s[None, :])
    lam, vec = jnp.linalg.eigh(ms)
    cut = m.shape[0] * jnp.finfo(m.dtype).eps * jnp.max(jnp.abs(lam))
    inv = jnp.where(lam > cut, 1.0 / jnp.where(lam > cut, lam, 1.0), 0.0)
    return (vec @ (inv * (vec.T @ (b / s)))) / s


def solve_with_fallback(m, b):
    """Cholesky solve; eigen pseudo-inverse (no derivative through ``m``) if that is not finite.

    Returns
    -------
    SolveResult
    """
    x = jacobi_cholesky_solve(m, b)
    ok = jnp.all(jnp.isfinite(x))
    x = jax.lax.cond(ok, lambda: x, lambda: _pinv_solve(m, b))
    return SolveResult(x, ~ok, jnp.all(jnp.isfinite(x)))


def condition_number(m):
    """Eigenvalue condition number ``lambda_max / lambda_min`` of symmetric ``m``.

    ip_diffim's ``EIGENVALUE`` type (``KernelSolution::getConditionNumber``); it is a diagnostic,
    computed without a derivative. Returns ``inf`` when the smallest eigenvalue is <= 0.
    """
    lam = jnp.linalg.eigvalsh(jax.lax.stop_gradient(0.5 * (m + m.T)))
    return jnp.where(lam[0] > 0, lam[-1] / jnp.where(lam[0] > 0, lam[0], 1.0), jnp.inf)
