"""Difference images in the two convolution modes of ip_diffim (ip_diffim.md §2.8).

* :func:`subtract_convolve_template`: ``D = S - K ⊛ T - bg``, variance ``var_S + K² ⊛ var_T``
  (port of ``AlardLuptonSubtractTask.runConvolveTemplate`` + ``_subtractImages``).
* :func:`subtract_convolve_science`: the kernel was fitted with the roles swapped,
  ``K ⊛ S + bg ≈ T``; ``D = (K ⊛ S + bg - T) / κ`` with ``κ`` the kernel sum at the centre of the
  fit box, and variance ``(K² ⊛ var_S + var_T) / κ²`` (port of ``runConvolveScience``).

Deliberate difference in ``convolveScience``: ip_diffim divides the convolved science by ``κ``
and adds back the background undivided, which assumes photometrically calibrated inputs; here the
whole difference, background included, is divided by ``κ``, so it is on the science image's
photometric scale and nothing of ``T (1/κ - 1)`` or ``bg (1 - 1/κ)`` is left at stars or on the
sky when the flux scales differ. With ``subtract_background=False`` (ip_diffim's default) the
fitted background is not removed, as in ip_diffim.

All images must be on the same pixel grid (same shape). Masks are OR-ed, the convolved image's
mask smeared over the kernel footprint, and the ``k // 2`` border is flagged ``EDGE``.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from .convolve import MaskedImage, apply_kernel, spatial_factors, term_kernels
from .spatial import spatial_terms

__all__ = [
    "Difference",
    "background_image",
    "kernel_image",
    "kernel_image_host",
    "matched_image",
    "subtract_convolve_template",
    "subtract_convolve_science",
]


class Difference(NamedTuple):
    """A difference image and the PSF-matched image it was made with (pytree).

    The fitted background model is evaluated on demand by :func:`background_image`.

    Attributes
    ----------
    difference : MaskedImage
    matched : MaskedImage
        The convolved image (the matched template, or the matched science image divided by κ).
    """

    difference: MaskedImage
    matched: MaskedImage


def background_image(solution, shape, config, origin=(0.0, 0.0), dtype=jnp.float32):
    """Evaluate the fitted background ``sum_m beta_m g_m(x, y)`` on an image grid."""
    order = config.spatial_bg_order if config.fit_for_background else 0
    gy, gx = spatial_factors(shape, order, solution.bbox, config.spatial_model_type, origin)
    beta = solution.background_coefficients.astype(dtype)
    return jnp.einsum("m,my,mx->yx", beta, gy.astype(dtype), gx.astype(dtype))


def kernel_image(solution, x, y, config):
    """The fitted kernel image at position ``(x, y)`` (the frame of ``solution.bbox``).

    Returns
    -------
    Array, shape (k, k)
        Not normalised; its sum is the kernel sum at ``(x, y)``.
    """
    terms = spatial_terms(
        x, y, config.spatial_kernel_order, solution.bbox, config.spatial_model_type
    )
    per_term = term_kernels(solution.basis, solution.kernel_coefficients)
    return jnp.einsum("k,kvu->vu", terms.astype(per_term.dtype), per_term)


def kernel_image_host(solution, x, y, config):
    """:func:`kernel_image` in float64 numpy on the host (``x, y`` plain numbers).

    Returns
    -------
    numpy.ndarray, shape (k, k)
        Correlation orientation (afw's): ``out(p) = sum_u K(u) in(p + u)``.
    """
    bbox = np.asarray(solution.bbox, np.float64)
    terms = spatial_terms(
        np.float64(x),
        np.float64(y),
        config.spatial_kernel_order,
        bbox,
        config.spatial_model_type,
        xp=np,
    )
    coeff = np.asarray(solution.kernel_coefficients, np.float64) @ terms
    return np.einsum("i,ivu->vu", coeff, np.asarray(solution.basis, np.float64))


def matched_image(masked, solution, config, origin=(0.0, 0.0), tile=None, preserve_bits=0):
    """Convolve ``masked`` with the fitted spatially varying kernel (:func:`apply_kernel`)."""
    dtype = masked.image.dtype
    kernels = term_kernels(solution.basis, solution.kernel_coefficients).astype(dtype)
    return apply_kernel(
        masked,
        kernels,
        solution.bbox,
        config.spatial_kernel_order,
        config.spatial_model_type,
        origin,
        tile,
        preserve_bits,
    )


def subtract_convolve_template(
    template, science, solution, config, subtract_background=False, preserve_bits=0
):
    """``D = S - K ⊛ T (- bg)`` for a kernel fitted with ``K ⊛ T + bg ≈ S``.

    Parameters
    ----------
    template, science : MaskedImage
        Same shape; masks are integers.
    solution : KernelSolution
        From :func:`jaxdiffim.core.fit.fit_kernel` (template convolved).
    config : KernelFitConfig
    subtract_background : bool
        Also remove the fitted background (``doSubtractBackground``).
    preserve_bits : int
        Mask bits of the convolved image that are not smeared by the convolution.

    Returns
    -------
    Difference
    """
    matched = matched_image(template, solution, config, preserve_bits=preserve_bits)
    diff = science.image - matched.image
    if subtract_background:
        diff = diff - background_image(solution, diff.shape, config, dtype=diff.dtype)
    out = MaskedImage(diff, science.variance + matched.variance, science.mask | matched.mask)
    return Difference(out, matched)


def subtract_convolve_science(
    template, science, solution, config, subtract_background=False, preserve_bits=0
):
    """``D = (K ⊛ S (+ bg) - T) / κ`` for a kernel fitted with ``K ⊛ S + bg ≈ T``.

    ``κ`` is ``solution.kernel_sum`` (the kernel sum at the centre of the fit box), the
    template-to-science flux ratio. The result is on the science image's photometric scale; see
    the module docstring for the difference from ip_diffim.

    Returns
    -------
    Difference
        ``matched`` is ``K ⊛ S / κ`` with variance ``K² ⊛ var_S / κ²``.
    """
    matched = matched_image(science, solution, config, preserve_bits=preserve_bits)
    dtype = science.image.dtype
    kappa = solution.kernel_sum.astype(dtype)
    kappa = jnp.where(kappa != 0, kappa, 1.0)  # no candidates: the status says so; stay finite
    model = matched.image
    if subtract_background:
        model = model + background_image(solution, model.shape, config, dtype=dtype)
    diff = (model - template.image) / kappa
    var = (matched.variance + template.variance) / kappa**2
    scaled = MaskedImage(matched.image / kappa, matched.variance / kappa**2, matched.mask)
    out = MaskedImage(diff, var, template.mask | matched.mask)
    return Difference(out, scaled)
