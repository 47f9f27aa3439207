"""Stamp design matrices and the per-stamp and spatial normal equations.

Port of ip_diffim ``StaticKernelSolution::build`` (per stamp) and
``SpatialKernelSolution::addConstraint`` (spatial), ip_diffim.md §2.3 and §2.5.

For a stamp of side ``S = 2k + 1`` around a candidate, the fit uses the ``L = k + 2`` square
interior on which every basis correlation is defined. The design has one column per basis
kernel, ``C_i = B_i ⊛ t`` (afw correlation), plus a column of ones for the background. Everything
here runs in the fit dtype (float64, see :mod:`jaxdiffim.core.precision`).

The Alard-Lupton design is built in the *raw* (unrenormalised) term space, where each term is
separable and costs two 1-D passes; ``T_aug = blockdiag(T, 1)`` maps it to the renormalised basis:
``M = T_aug M_raw T_augᵀ``, ``b = T_aug b_raw``, and a solution ``a`` acts on the raw design as
``T_augᵀ a``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from .basis import al_terms

__all__ = [
    "correlation_matrices",
    "al_raw_design",
    "df_raw_design",
    "add_background_column",
    "DESIGN_CHUNK",
    "map_in_chunks",
    "stamp_normal_equations",
    "spatial_layout",
    "spatial_normal_equations",
    "expand_spatial_solution",
]


def correlation_matrices(phi, n_in):
    """Banded matrices ``W_f`` with ``(x @ W_f)[o] = sum_i phi_f[i] x[o + i]`` (valid part).

    Parameters
    ----------
    phi : Array, shape (n_f, k)
        1-D kernels.
    n_in : int
        Length of the input axis (static).

    Returns
    -------
    Array, shape (n_f, n_in, n_in - k + 1)
    """
    n_f, k = phi.shape
    n_out = n_in - k + 1
    i = np.arange(k)[:, None]
    o = np.arange(n_out)[None, :]
    rows = np.broadcast_to(i + o, (k, n_out))
    cols = np.broadcast_to(o, (k, n_out))
    vals = jnp.broadcast_to(phi[:, :, None], (n_f, k, n_out))
    return jnp.zeros((n_f, n_in, n_out), phi.dtype).at[:, rows, cols].set(vals)


def al_raw_design(t_stamps, phi, degrees):
    """Raw Alard-Lupton design ``R_r ⊛ t`` on the valid interior of each stamp.

    Parameters
    ----------
    t_stamps : Array, shape (N, S, S)
        Template stamps (the image that is convolved).
    phi : Array, shape (n_f, k)
        Factors from :func:`jaxdiffim.core.basis.alard_lupton_factors`.
    degrees : tuple of int

    Returns
    -------
    Array, shape (N, n_b, L, L) with ``L = S - k + 1``.
    """
    terms = al_terms(degrees)
    w = correlation_matrices(phi, t_stamps.shape[-1])  # (n_f, S, L)
    x_pass = jnp.einsum("nyx,fxo->nfyo", t_stamps, w)  # correlate along x
    return jnp.einsum("nryo,ryp->nrpo", x_pass[:, terms.fx], w[terms.fy])  # then along y


def df_raw_design(t_stamps, kernel_size):
    """Delta-function design: the stamp shifted by every kernel offset (row-major offsets).

    Returns
    -------
    Array, shape (N, k², L, L)
    """
    k = kernel_size
    n_out = t_stamps.shape[-1] - k + 1
    dv, du = np.divmod(np.arange(k * k), k)
    rows = dv[:, None, None] + np.arange(n_out)[None, :, None]
    cols = du[:, None, None] + np.arange(n_out)[None, None, :]
    return t_stamps[:, rows, cols]


#: Stamps whose design is built at once (:func:`map_in_chunks`): the whole batch's passes
#: held 0.45 GB of float64 temporaries at 1024 stamps of 43² (27 terms), a quarter of the
#: 4096² subtraction program's working memory.
DESIGN_CHUNK = 64


def map_in_chunks(fn, stamps, chunk=DESIGN_CHUNK):
    """``fn(stamps)`` computed ``chunk`` stamps at a time (``lax.map``), when ``chunk`` divides
    the number of stamps ``N`` and is smaller; else at once.

    ``fn`` maps an array of shape (n, ...) to arrays with leading axis n, stamp by stamp (no
    mixing across stamps); only one chunk's intermediates are live at a time.
    """
    n = stamps.shape[0]
    if n <= chunk or n % chunk:
        return fn(stamps)
    parts = jax.lax.map(fn, stamps.reshape(n // chunk, chunk, *stamps.shape[1:]))
    return jax.tree_util.tree_map(lambda a: a.reshape(n, *a.shape[2:]), parts)


def add_background_column(design):
    """Flatten a design ``(N, n, L, L)`` to ``(N, n + 1, L²)`` with a trailing column of ones."""
    n_stamps, n, side, _ = design.shape
    flat = design.reshape(n_stamps, n, side * side)
    ones = jnp.ones((n_stamps, 1, side * side), design.dtype)
    return jnp.concatenate([flat, ones], axis=1)


def stamp_normal_equations(design, target, weight, fit_background):
    """Weighted normal equations of every stamp, ``M = Cᵀ W C`` and ``b = Cᵀ W y``.

    Parameters
    ----------
    design : Array, shape (N, n + 1, P)
        Flattened design with the background column last (:func:`add_background_column`).
    target : Array, shape (N, P)
        Science pixels on the fit interior.
    weight : Array, shape (N,) or (N, P)
        Inverse variance, constant per stamp or per pixel.
    fit_background : bool
        When False the background row and column are replaced by an identity block so the
        system keeps its shape and the background solves to exactly 0.

    Returns
    -------
    M : Array, shape (N, n + 1, n + 1)
    b : Array, shape (N, n + 1)
    """
    per_pixel = jnp.broadcast_to(weight[:, None] if weight.ndim == 1 else weight, target.shape)

    def one(stamp):  # one stamp's plain matrix products, stamp after stamp: XLA's CPU batched
        c, y, w = stamp  # dot of all at once was 2.4-5x slower (float64, 1024 stamps of 28 x
        wc = c * w  # 529: 0.38-0.53 s against 0.10-0.16 s on 2 cores; the same numbers)
        return wc @ c.T, wc @ y

    m, b = jax.lax.map(one, (design, target, per_pixel))
    if not fit_background:
        n = m.shape[-1] - 1
        m = m.at[:, n, :].set(0.0).at[:, :, n].set(0.0).at[:, n, n].set(1.0)
        b = b.at[:, n].set(0.0)
    return m, b


def spatial_layout(n_b, n_kt, n_bt, constant_first_term):
    """Static indices of the spatial unknowns inside the full ``(n_b * n_kt + n_bt)`` layout.

    The full layout orders the kernel unknowns ``alpha[i, k]`` basis-major, then the background
    ``beta[m]``. With ``constant_first_term`` (Alard-Lupton bases) basis 0 keeps only its
    constant spatial term, as in ip_diffim, so the kernel sum is the same everywhere.

    Returns
    -------
    ndarray of int, shape (n_t,)
        ``n_t = (n_b - 1) n_kt + 1 + n_bt`` with a constant first term, else ``n_b n_kt + n_bt``.
    """
    keep = np.ones(n_b * n_kt + n_bt, bool)
    if constant_first_term:
        keep[1:n_kt] = False
    return np.flatnonzero(keep)


def spatial_normal_equations(m, b, weight, p, q, layout):
    """Spatial normal equations ``sum_c w_c A_cᵀ M_c A_c`` and ``sum_c w_c A_cᵀ b_c``.

    ``A_c`` maps the spatial unknowns to the stamp coefficients at the candidate's position:
    ``a_i = sum_k alpha[i,k] p_ck`` and ``bg = sum_m beta[m] q_cm`` ("assume things don't vary
    over the stamp"). This is the block formula of ip_diffim's ``addConstraint``.

    Parameters
    ----------
    m : Array, shape (N, n_b + 1, n_b + 1)
    b : Array, shape (N, n_b + 1)
    weight : Array, shape (N,)
        0 or 1 per candidate (the active set); padded rows must be 0.
    p : Array, shape (N, n_kt)
        Kernel spatial terms at each candidate (``p[:, 0] == 1``).
    q : Array, shape (N, n_bt)
        Background spatial terms (``n_bt = 0`` without a fitted background).
    layout : ndarray of int
        From :func:`spatial_layout`.

    Returns
    -------
    M : Array, shape (n_t, n_t)
    rhs : Array, shape (n_t,)
    """
    n_b = m.shape[-1] - 1
    n_kt = p.shape[1]
    mw = m * weight[:, None, None]
    bw = b * weight[:, None]
    kk = jnp.einsum("cij,ck,cl->ikjl", mw[:, :n_b, :n_b], p, p).reshape(n_b * n_kt, n_b * n_kt)
    kb = jnp.einsum("ci,ck,cm->ikm", mw[:, :n_b, n_b], p, q).reshape(n_b * n_kt, -1)
    bb = jnp.einsum("c,cm,cn->mn", mw[:, n_b, n_b], q, q)
    full = jnp.block([[kk, kb], [kb.T, bb]])
    rhs = jnp.concatenate(
        [jnp.einsum("ci,ck->ik", bw[:, :n_b], p).reshape(-1), jnp.einsum("c,cm->m", bw[:, n_b], q)]
    )
    return full[np.ix_(layout, layout)], rhs[layout]


def expand_spatial_solution(theta, n_b, n_kt, n_bt, layout):
    """Spatial solution as ``(n_b, n_kt)`` kernel coefficients and ``(n_bt,)`` background ones.

    Unknowns dropped by the layout (basis 0's non-constant terms) are exactly 0.
    """
    full = jnp.zeros(n_b * n_kt + n_bt, theta.dtype).at[layout].set(theta)
    return full[: n_b * n_kt].reshape(n_b, n_kt), full[n_b * n_kt :]
