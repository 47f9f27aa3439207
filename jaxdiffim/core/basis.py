"""PSF-matching kernel bases: Alard-Lupton (Gaussians x polynomials) and delta functions.

Port of ``lsst.ip.diffim`` ``makeKernelBasisList.py`` (the width rule) and ``src/BasisLists.cc``
(``makeAlardLuptonBasisList``, ``renormalizeKernelList``, ``makeDeltaFunctionBasisList``).

Kernel images follow afw: an array ``B[v + h, u + h]`` holds the kernel at pixel offset
``(u, v)`` = (x, y), ``h = kernel_size // 2``, and it is applied as a *correlation*
``out(x) = sum_u B(u) in(x + u)`` (ip_diffim.md §2.0).

Every raw Alard-Lupton term is separable, ``R(u, v) = phi_a(u) phi_b(v)`` with
``phi_a(u) = g(u) (u/h)^a`` and ``g`` a unit-sum 1-D Gaussian, and the renormalised basis is a
linear map of the raw terms, ``B = T R``. The fit uses that structure (two 1-D passes per stamp
instead of 27 2-D correlations); :func:`alard_lupton_basis` returns the images.

The Gaussian widths are traced arrays, so everything downstream is differentiable with respect to
them; the degrees and the kernel size fix array shapes and are static.
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "FWHM_PER_SIGMA",
    "WIDTH_RULE",
    "ALTerms",
    "al_terms",
    "alard_lupton_factors",
    "alard_lupton_transform",
    "alard_lupton_basis",
    "alard_lupton_parts",
    "alard_lupton_sigmas",
    "delta_function_basis",
    "n_alard_lupton",
    "renormalize_kernels",
]

#: FWHM of a Gaussian in units of its sigma, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


class ALTerms(NamedTuple):
    """Static bookkeeping of the raw Alard-Lupton terms (numpy arrays, one entry per term).

    Attributes
    ----------
    gauss : ndarray of int, shape (n_b,)
        Index of the Gaussian of each term.
    ax, ay : ndarray of int, shape (n_b,)
        Powers of u (x) and v (y), in afw ``PolynomialFunction2`` order 1, x, y, x², xy, y², ...
    fx, fy : ndarray of int, shape (n_b,)
        Rows of :func:`alard_lupton_factors` with ``phi_ax`` and ``phi_ay`` of the term's Gaussian.
    even : ndarray of bool, shape (n_b,)
        Both powers even, so the term has a non-zero sum (the others sum to zero by symmetry).
    """

    gauss: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    even: np.ndarray


def n_alard_lupton(degrees):
    """Number of Alard-Lupton basis kernels, ``sum_j (d_j + 1)(d_j + 2) / 2``."""
    return sum((d + 1) * (d + 2) // 2 for d in degrees)


def al_terms(degrees):
    """Static term table of the Alard-Lupton basis for Gaussian polynomial ``degrees``."""
    gauss, ax, ay, fx, fy = [], [], [], [], []
    offset = 0
    for j, d in enumerate(degrees):
        for total in range(d + 1):
            for b in range(total + 1):
                gauss.append(j)
                ax.append(total - b)
                ay.append(b)
                fx.append(offset + total - b)
                fy.append(offset + b)
        offset += d + 1
    ax, ay = np.array(ax), np.array(ay)
    return ALTerms(
        np.array(gauss), ax, ay, np.array(fx), np.array(fy), (ax % 2 == 0) & (ay % 2 == 0)
    )


def _check_degrees(sigmas, degrees, kernel_size):
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InvalidInputError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
    if len(degrees) == 0 or any(int(d) != d or d < 0 for d in degrees):
        raise InvalidInputError(f"degrees must be non-negative integers, got {degrees}.")
    if np.ndim(sigmas) != 1 or np.shape(sigmas)[0] != len(degrees):
        raise InvalidInputError(
            f"sigmas must be a 1-D array with one width per Gaussian ({len(degrees)}), "
            f"got shape {np.shape(sigmas)}."
        )


def alard_lupton_factors(sigmas, degrees, kernel_size):
    """1-D factors ``phi_{j,a}(u) = g_j(u) (u/h)^a`` of the Alard-Lupton basis.

    Parameters
    ----------
    sigmas : array_like, shape (n_gauss,)
        Gaussian widths in pixels (traced; differentiable).
    degrees : tuple of int
        Polynomial degree of each Gaussian (static).
    kernel_size : int
        Odd kernel width in pixels (static).

    Returns
    -------
    phi : Array, shape (sum_j (d_j + 1), kernel_size)
        Rows ordered by Gaussian, then by power ``a = 0 .. d_j``. ``g_j`` has unit sum, so
        ``phi_{j,0}(u) phi_{j,0}(v)`` is the unit-sum 2-D Gaussian of ip_diffim.
    """
    _check_degrees(sigmas, degrees, kernel_size)
    h = kernel_size // 2
    u = jnp.arange(-h, h + 1, dtype=jnp.result_type(sigmas, float))
    scale = u / h if h > 0 else jnp.zeros_like(u)
    rows = []
    for j, d in enumerate(degrees):
        g = jnp.exp(-0.5 * (u / sigmas[j]) ** 2)
        g = g / jnp.sum(g)
        for a in range(d + 1):
            rows.append(g * scale**a)
    return jnp.stack(rows)


def _raw_terms(phi, degrees):
    """Raw term images ``R_r[v, u] = phi_ay(v) phi_ax(u)``, shape (n_b, k, k)."""
    terms = al_terms(degrees)
    return phi[terms.fy][:, :, None] * phi[terms.fx][:, None, :]


def alard_lupton_transform(phi, degrees):
    """Renormalisation matrix ``T`` with ``B = T R`` (port of ``renormalizeKernelList``).

    ``B_0 = R_0 / sum R_0``; for ``i >= 1``, ``R_i / sum R_i - B_0`` if the term has a non-zero
    sum, else ``R_i``, then scaled to unit L2 norm. ip_diffim tests ``|sum R_i| > FLT_EPSILON``
    numerically; here the zero-sum terms are known exactly (an odd power of u or v against a
    symmetric Gaussian), which gives the same choice and keeps ``T`` differentiable.

    Parameters
    ----------
    phi : Array, shape (n_factors, k)
        Output of :func:`alard_lupton_factors`.
    degrees : tuple of int
        Polynomial degree of each Gaussian.

    Returns
    -------
    T : Array, shape (n_b, n_b)
    """
    terms = al_terms(degrees)
    n_b = len(terms.gauss)
    sums = jnp.sum(phi, axis=1)
    s = sums[terms.fy] * sums[terms.fx]  # sum of each raw term
    eye = jnp.eye(n_b, dtype=phi.dtype)
    safe_s = jnp.where(terms.even, s, 1.0)
    rows = jnp.where(terms.even[:, None], eye / safe_s[:, None] - eye[0] / s[0], eye)
    rows = rows.at[0].set(eye[0] / s[0])
    shaped = jnp.einsum("ir,rvu->ivu", rows, _raw_terms(phi, degrees))
    norms = jnp.sqrt(jnp.sum(shaped**2, axis=(1, 2)))
    norms = norms.at[0].set(1.0)  # B_0 keeps unit sum, not unit norm
    return rows / norms[:, None]


def alard_lupton_parts(sigmas, degrees, kernel_size):
    """Factors, renormalisation matrix and images of the Alard-Lupton basis.

    Returns
    -------
    phi : Array, shape (n_f, k)
        :func:`alard_lupton_factors`.
    T : Array, shape (n_b, n_b)
        :func:`alard_lupton_transform`.
    basis : Array, shape (n_b, k, k)
        ``T R``, as :func:`alard_lupton_basis`.
    """
    phi = alard_lupton_factors(sigmas, degrees, kernel_size)
    t = alard_lupton_transform(phi, degrees)
    return phi, t, jnp.einsum("ir,rvu->ivu", t, _raw_terms(phi, degrees))


def alard_lupton_basis(sigmas, degrees, kernel_size):
    """Renormalised Alard-Lupton basis images (port of ``makeAlardLuptonBasisList`` + renorm).

    Returns
    -------
    basis : Array, shape (n_b, kernel_size, kernel_size)
        ``sum B_0 = 1``; ``sum B_i = 0`` and ``||B_i||_2 = 1`` for ``i >= 1``.
    """
    return alard_lupton_parts(sigmas, degrees, kernel_size)[2]


def renormalize_kernels(kernels):
    """Renormalise an arbitrary kernel list (port of ``renormalizeKernelList``).

    ``B_0`` gets unit sum; every later kernel with ``|sum| > FLT_EPSILON`` becomes
    ``K_i / sum K_i - B_0``; then every later kernel is scaled to unit L2 norm.

    Parameters
    ----------
    kernels : array_like, shape (n, k, k)

    Returns
    -------
    Array, shape (n, k, k)
    """
    kernels = jnp.asarray(kernels)
    sums = jnp.sum(kernels, axis=(1, 2))
    first = kernels[0] / sums[0]
    big = jnp.abs(sums) > np.finfo(np.float32).eps
    rest = jnp.where(
        big[1:, None, None],
        kernels[1:] / jnp.where(big, sums, 1.0)[1:, None, None] - first,
        kernels[1:],
    )
    rest = rest / jnp.sqrt(jnp.sum(rest**2, axis=(1, 2)))[:, None, None]
    return jnp.concatenate([first[None], rest])


def delta_function_basis(kernel_size, dtype=jnp.float32):
    """Delta-function basis: ``kernel_size**2`` one-hot images, row-major (y outer, x inner).

    Port of ``makeDeltaFunctionBasisList``.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InvalidInputError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
    n = kernel_size * kernel_size
    return jnp.eye(n, dtype=dtype).reshape(n, kernel_size, kernel_size)


#: ip_diffim's defaults of the width rule (``PsfMatchConfigAL``); the one home of these values
#: (:class:`jaxdiffim.algorithms.config.SubtractionConfig` takes its defaults from here).
WIDTH_RULE = {
    "sig_gauss": (0.7, 1.5, 3.0),
    "gauss_beta": 2.0,
    "min_sig": 0.7,
    "min_sig_deconv": 0.4,
    "kernel_size": 21,
    "kernel_size_fwhm_scaling": 6.0,
    "kernel_size_min": 21,
    "kernel_size_max": 35,
}


def alard_lupton_sigmas(
    target_fwhm=None,
    reference_fwhm=None,
    *,
    n_gauss=3,
    sig_gauss=WIDTH_RULE["sig_gauss"],
    gauss_beta=WIDTH_RULE["gauss_beta"],
    min_sig=WIDTH_RULE["min_sig"],
    min_sig_deconv=WIDTH_RULE["min_sig_deconv"],
    kernel_size=WIDTH_RULE["kernel_size"],
    kernel_size_fwhm_scaling=WIDTH_RULE["kernel_size_fwhm_scaling"],
    kernel_size_min=WIDTH_RULE["kernel_size_min"],
    kernel_size_max=WIDTH_RULE["kernel_size_max"],
    scale_by_fwhm=True,
):
    """Gaussian widths and kernel size from the two PSF FWHMs (host side, plain floats).

    Port of ``generateAlardLuptonBasisList`` / ``_calculateBasisSigmas`` (ip_diffim.md §2.1).

    Parameters
    ----------
    target_fwhm : float or None
        FWHM in pixels of the image that will be convolved.
    reference_fwhm : float or None
        FWHM in pixels of the image it is matched to.

    Returns
    -------
    sigmas : tuple of float
        ``n_gauss`` Gaussian widths in pixels.
    kernel_size : int
        Odd kernel width in pixels.

    Notes
    -----
    Without FWHMs or with ``scale_by_fwhm=False`` the configured ``sig_gauss`` and
    ``kernel_size`` are returned unchanged. With equal FWHMs the configured widths are kept but
    the size is still recomputed, as in ip_diffim. Convolution (reference wider) floors the
    matching width at ``min_sig``, deconvolution at ``min_sig_deconv``; the widths form the
    geometric series ``max(floor, sigma_K / beta) * beta**j``; the size is
    ``int(scaling * sigma_last)``, made odd, clamped to ``[kernel_size_min, kernel_size_max]``.
    """
    if len(sig_gauss) != n_gauss:
        raise InvalidInputError(
            f"sig_gauss has {len(sig_gauss)} widths but n_gauss is {n_gauss}; make them agree."
        )
    if kernel_size % 2 == 0:
        raise InvalidInputError(f"kernel_size must be odd, got {kernel_size}.")
    if not scale_by_fwhm or target_fwhm is None or reference_fwhm is None:
        return tuple(float(s) for s in sig_gauss), int(kernel_size)
    for name, value in (("target_fwhm", target_fwhm), ("reference_fwhm", reference_fwhm)):
        if not (np.isfinite(value) and value > 0):
            raise InvalidInputError(
                f"{name} must be a positive finite FWHM in pixels, got {value}."
            )
    sig_t = target_fwhm / FWHM_PER_SIGMA
    sig_r = reference_fwhm / FWHM_PER_SIGMA
    if sig_t == sig_r:
        sigmas = [float(s) for s in sig_gauss]
    else:
        if sig_r > sig_t:
            sig_k, floor = math.sqrt(sig_r**2 - sig_t**2), min_sig
        else:
            sig_k, floor = math.sqrt(sig_t**2 - sig_r**2), min_sig_deconv
        sig_k = max(sig_k, floor)
        if n_gauss == 1:
            sigmas = [sig_k]
        else:
            first = max(floor, sig_k / gauss_beta)
            sigmas = [first * gauss_beta**j for j in range(n_gauss)]
    size = int(kernel_size_fwhm_scaling * sigmas[-1])
    size += 1 - size % 2
    size = min(max(size, kernel_size_min), kernel_size_max)
    return tuple(sigmas), int(size)
