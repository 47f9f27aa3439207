"""Symmetric positive-definite solves with implicit derivatives, and condition numbers.

ip_diffim solves with Eigen's ``FullPivLU`` in double precision and falls back to an
eigen-decomposition pseudo-inverse when the matrix is not invertible (``KernelSolution::solve``).
Here: symmetrise, Jacobi-scale (``D^-1/2 M D^-1/2``, which cuts the condition number of an AL
system by orders of magnitude), Cholesky through ``jax.scipy.linalg.solve(assume_a="pos")`` — a
``lax.custom_linear_solve``, so derivatives are implicit (the adjoint solve reuses the
factorisation) — and, when the scaled matrix is numerically singular, the same pseudo-inverse
fallback computed from a ``stop_gradient`` matrix, so no NaN derivative can leak from a degenerate
eigen-decomposition or from the unused Cholesky branch.

Every LAPACK call (Cholesky factor, triangular solves, ``eigh``) goes through
:func:`one_at_a_time`: under ``vmap`` it loops over the batch (``lax.map``) instead of issuing
one batched LAPACK call. jaxlib's batched CPU kernels split a batch over the intra-op thread
pool and block a pool thread until the pieces are done; when several devices share a small
pool (``--xla_force_host_platform_device_count``, sharded batches on a 2-core machine) every
pool thread can end up blocked that way and the program hangs. One matrix per call runs inline.
The matrices here are small (stamp systems of ~30 unknowns, spatial systems of a few hundred),
so the loop costs little. Derivatives still come from ``lax.custom_linear_solve`` (implicit:
the adjoint solve reuses the factor), and only ``stop_gradient`` data reaches the looped calls.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax.custom_batching import custom_vmap

__all__ = [
    "SolveResult",
    "condition_number",
    "jacobi_cholesky_solve",
    "one_at_a_time",
    "solve_with_fallback",
]


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


def one_at_a_time(fn):
    """``fn`` whose ``vmap`` is a sequential loop (``lax.map``) over the batch.

    For functions of non-differentiated arrays (``custom_vmap`` has no reverse mode); nested
    ``vmap`` loops at every level. See the module docstring for why.
    """

    @custom_vmap
    def call(*args):
        return fn(*args)

    @call.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = tuple(
            a if batched else jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
            for a, batched in zip(args, in_batched, strict=True)
        )
        out = jax.lax.map(lambda xs: call(*xs), args)
        return out, jax.tree.map(lambda _: True, out)

    return call


_cholesky = one_at_a_time(lambda m: jsl.cho_factor(m, lower=True)[0])
_cho_solve = one_at_a_time(lambda c, r: jsl.cho_solve((c, True), r))
_eigh = one_at_a_time(jnp.linalg.eigh)
_eigvalsh = one_at_a_time(jnp.linalg.eigvalsh)


def _scaled(m):
    """Symmetrised, Jacobi-scaled ``D^-1/2 M D^-1/2`` and the scale ``sqrt(diag M)``."""
    m = 0.5 * (m + m.T)
    d = jnp.diagonal(m)
    s = jnp.sqrt(jnp.where(d > 0, d, 1.0))
    return m / (s[:, None] * s[None, :]), s


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
    ms, s = _scaled(m)
    factor = _cholesky(jax.lax.stop_gradient(ms))
    x = jax.lax.custom_linear_solve(
        lambda v: ms @ v, b / s, solve=lambda _, r: _cho_solve(factor, r), symmetric=True
    )
    return x / s


def solve_with_fallback(m, b):
    """Cholesky solve; eigen pseudo-inverse (no derivative through ``m``) when ``m`` is singular.

    "Singular" is decided on the eigenvalues of the Jacobi-scaled matrix (no derivative):
    ``lambda_min <= n * eps * lambda_max``. That catches rank-deficient systems (e.g. fewer
    candidates than background terms), for which Cholesky often "succeeds" on rounding-level
    pivots and returns arbitrary values along the null space. The pseudo-inverse drops those
    directions (ip_diffim's fallback inverts every non-zero eigenvalue; here the cut is relative).
    Both branches are computed and the unused one is fed a harmless identity matrix, so neither
    can leak NaN into derivatives (``lax.cond``/``select`` would differentiate both).

    Returns
    -------
    SolveResult
    """
    n = m.shape[0]
    ms, s = _scaled(jax.lax.stop_gradient(m))
    lam, vec = _eigh(ms)
    cut = n * jnp.finfo(m.dtype).eps * jnp.max(jnp.abs(lam))
    ok = lam[0] > cut
    safe = jnp.where(ok, m, jnp.eye(n, dtype=m.dtype))
    x_chol = jacobi_cholesky_solve(safe, b)
    inv = jnp.where(lam > cut, 1.0 / jnp.where(lam > cut, lam, 1.0), 0.0)
    x_pinv = (vec @ (inv * (vec.T @ (b / s)))) / s
    x = jnp.where(ok, x_chol, x_pinv)
    return SolveResult(x, ~ok, jnp.all(jnp.isfinite(x)))


def condition_number(m):
    """Eigenvalue condition number ``lambda_max / lambda_min`` of symmetric ``m``.

    ip_diffim's ``EIGENVALUE`` type (``KernelSolution::getConditionNumber``); it is a diagnostic,
    computed without a derivative. Returns ``inf`` when the smallest eigenvalue is <= 0.
    """
    lam = _eigvalsh(jax.lax.stop_gradient(0.5 * (m + m.T)))
    return jnp.where(lam[0] > 0, lam[-1] / jnp.where(lam[0] > 0, lam[0], 1.0), jnp.inf)
