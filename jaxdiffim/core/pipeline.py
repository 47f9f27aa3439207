"""Fit, convolve and subtract in one jitted function (the differentiable end-to-end path).

:func:`subtract_images` composes :func:`jaxdiffim.core.fit.fit_kernel_jit` with
:mod:`jaxdiffim.core.subtract`, so a scalar loss of the difference image can be differentiated with
respect to the input images and the basis widths (the candidate selection is held fixed inside
the fit). :func:`subtract_and_decorrelate` goes on, in the same program, to the decorrelated
difference, the background image and the per-star QA ratios: everything of the subtraction
after the kernel sources are chosen, with no host round trip in the middle.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError
from . import programs
from . import status as st
from .afterburner import decorrelate_masked
from .background import residual_sky
from .convolve import MaskedImage, flag_around, window_bound
from .decorrelation import psf_filter as psf_filter_at
from .fit import DEFAULT_CONFIG, KernelSolution, fit_kernel_jit, prepare_fit_arguments
from .masks import SATURATED, bit, bits
from .precision import forward_mode_hint
from .quality import footprint_ratios
from .subtract import (
    background_image,
    kernel_image,
    subtract_convolve_science,
    subtract_convolve_template,
)

__all__ = [
    "MODES",
    "SubtractionArrays",
    "subtract_and_decorrelate",
    "subtract_images",
]

#: Convolution modes of the functional core (``auto`` is decided by the caller from the PSFs).
MODES = ("convolveTemplate", "convolveScience")


@functools.partial(jax.jit, static_argnames=("mode", "subtract_background", "preserve_bits"))
def _subtract(
    template, science, candidates, sigmas, bbox, config, mode, subtract_background, preserve_bits
):
    if mode == "convolveTemplate":
        convolved, reference, subtract = template, science, subtract_convolve_template
    else:
        convolved, reference, subtract = science, template, subtract_convolve_science
    solution = fit_kernel_jit(
        convolved.image,
        reference.image,
        convolved.variance,
        reference.variance,
        candidates,
        sigmas,
        bbox,
        config=config,
    )
    diff = subtract(template, science, solution, config, subtract_background, preserve_bits)
    return diff, solution


def subtract_images(
    template,
    science,
    candidates,
    config=DEFAULT_CONFIG,
    sigmas=None,
    *,
    mode="convolveTemplate",
    subtract_background=False,
    bbox=None,
    check=True,
    preserve_bits=0,
):
    """PSF-match and subtract two masked images on the same pixel grid.

    Parameters
    ----------
    template, science : MaskedImage
        Image, variance and integer mask, all of shape (H, W).
    candidates : Candidates
        Kernel candidates in array pixel coordinates.
    config : KernelFitConfig
    sigmas : array_like, optional
        Alard-Lupton Gaussian widths in pixels (differentiable).
    mode : {"convolveTemplate", "convolveScience"}
        Which image is convolved; see :mod:`jaxdiffim.core.subtract`.
    subtract_background : bool
        Remove the fitted differential background from the difference.
    bbox : sequence of 4 floats, optional
        Box of the spatial model (default the whole array).
    check : bool
        Validate inputs and raise for a fatal fit status; pass False inside ``jit``/``grad``.
    preserve_bits : int
        Mask bits of the convolved image copied without smearing (static).

    Returns
    -------
    Difference
        ``difference``, ``matched`` and ``background``.
    KernelSolution
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}.")
    for name, masked in (("template", template), ("science", science)):
        if not isinstance(masked, MaskedImage):
            raise InvalidInputError(f"{name} must be a MaskedImage(image, variance, mask).")
        if check and np.shape(masked.mask) != np.shape(masked.image):
            raise InvalidInputError(f"{name}.mask must have the shape of {name}.image.")
    convolved, reference = (
        (template, science) if mode == "convolveTemplate" else (science, template)
    )
    sigmas, bbox = prepare_fit_arguments(
        convolved.image,
        reference.image,
        convolved.variance,
        reference.variance,
        candidates,
        config,
        sigmas,
        bbox,
        check,
    )
    with forward_mode_hint():
        diff, solution = _subtract(
            template,
            science,
            candidates,
            sigmas,
            bbox,
            config,
            mode,
            subtract_background,
            int(preserve_bits),
        )
    if check:
        st.raise_for_status(solution.status)
    return diff, solution


class SubtractionArrays(NamedTuple):
    """Outputs of :func:`subtract_and_decorrelate` (arrays only).

    Attributes
    ----------
    difference : MaskedImage
        The (decorrelated) difference; non-finite pixels carry ``NO_DATA``.
    matched_template, matched_science : MaskedImage
        The two images that were subtracted (in convolveScience mode the template divided by
        the kernel sum κ, and the convolved science image divided by κ).
    background : Array, shape (H, W)
        The fitted background with ip_diffim's sign (times ``background_scale``).
    background_scale : Array, shape ()
        1 in convolveTemplate mode, ``-1/κ`` in convolveScience mode.
    solution : KernelSolution
    mean_variances : Array, shape (2,)
        Clipped mean variances of the unconvolved and the convolved image (NaN without
        decorrelation).
    qa_ratios : Array, shape (n,)
        Footprint residual ratio of each QA star (NaN where undefined).
    qa_used : Array of bool, shape (n,)
    psf_filter : Array, shape (s, s)
        Unit-sum correlation kernel that the difference applies to the sources of the image
        that was not convolved: the decorrelation filter at the centre of the bbox
        (:func:`jaxdiffim.core.decorrelation.psf_filter`), or without decorrelation the
        preconvolution (score) or a delta function; ``s = 2 k + 1`` for the larger of the
        kernel and preconvolution sides ``k``.
    sky : Array, shape ()
        Mean of the residual sky removed from the difference (0 without ``sky``).
    """

    difference: MaskedImage
    matched_template: MaskedImage
    matched_science: MaskedImage
    background: jax.Array
    background_scale: jax.Array
    solution: KernelSolution
    mean_variances: jax.Array
    qa_ratios: jax.Array
    qa_used: jax.Array
    psf_filter: jax.Array
    sky: jax.Array


@functools.partial(
    jax.jit,
    static_argnames=(
        "mode",
        "subtract_background",
        "preserve_bits",
        "decorrelation",
        "qa_square",
        "sky",
        "halo_bound",
    ),
)
def _subtract_and_decorrelate(
    template,
    science,
    reference,
    candidates,
    sigmas,
    bbox,
    config,
    preconvolution,
    qa,
    halo,
    *,
    mode,
    subtract_background,
    preserve_bits,
    decorrelation,
    qa_square,
    sky,
    halo_bound,
):
    diff, solution = _subtract(
        template,
        reference,
        candidates,
        sigmas,
        bbox,
        config,
        mode,
        subtract_background,
        preserve_bits,
    )
    if mode == "convolveTemplate":  # the matched science image is the reference itself
        matched_template, matched_science = diff.matched, None
        unconvolved, convolved, scale = science, template, 1.0
        background_scale = jnp.ones((), template.image.dtype)
    else:
        kappa = solution.kernel_sum.astype(template.image.dtype)
        safe = jnp.where(kappa != 0, kappa, 1.0)
        matched_template = MaskedImage(
            template.image / safe, template.variance / safe**2, template.mask
        )
        matched_science = diff.matched
        unconvolved, convolved, scale = template, science, 1.0 / safe**2
        background_scale = -1.0 / safe
    difference = diff.difference
    dtype = difference.image.dtype
    s2 = jnp.full(2, jnp.nan, dtype)
    b = solution.bbox
    centre = kernel_image(solution, (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, config)
    size = 2 * max(centre.shape[0], 0 if preconvolution is None else preconvolution.shape[0]) + 1
    if preconvolution is None:
        psf_filter = jnp.zeros((size, size), dtype).at[size // 2, size // 2].set(1.0)
    else:
        pad = (size - preconvolution.shape[0]) // 2
        psf_filter = jnp.pad(preconvolution.astype(dtype), pad)
    if decorrelation is not None:
        kernel = None if decorrelation.n_nodes else centre  # one kernel: the one at the centre
        difference, s2 = decorrelate_masked(
            difference,
            unconvolved,
            convolved,
            decorrelation,
            kernel=kernel,
            solution=solution,
            config=config,
            scale=scale,
            preconvolution=preconvolution,
        )
        psf_filter = psf_filter_at(
            centre.astype(dtype),
            s2[0],
            s2[1],
            preconvolution,
            size=size,
        ).astype(dtype)
    image = difference.image
    mask = jnp.where(jnp.isfinite(image), difference.mask, difference.mask | bit("NO_DATA"))
    if halo_bound:  # the bright unsaturated ring around clipped cores: SUSPECT
        clipped = template.mask | science.mask
        mask = flag_around(mask, clipped, bits(SATURATED), halo, bit("SUSPECT"), halo_bound)
    sky_mean = jnp.zeros((), dtype)
    if sky is not None:
        # its inputs materialised first: fused into the sky's bins, XLA recomputed what makes
        # them (4096², 2 cores: the program 4.9-5.3 s against 4.6-4.8 s)
        inputs = jax.lax.optimization_barrier((image, difference.variance, mask, unconvolved))
        level = residual_sky(*inputs, *sky).astype(dtype)
        image, sky_mean = image - level, jnp.mean(level)
    difference = MaskedImage(image, difference.variance, mask.astype(jnp.int32))
    background = background_scale * background_image(solution, image.shape, config, dtype=dtype)
    x, y, valid, radius = qa
    ratios, used = footprint_ratios(
        image, reference.image, difference.mask, x, y, valid, radius, square=qa_square
    )
    return SubtractionArrays(
        difference,
        matched_template,
        matched_science,
        background.astype(dtype),
        jnp.asarray(background_scale, dtype),
        solution,
        s2,
        ratios,
        used,
        psf_filter,
        sky_mean,
    )


def subtract_and_decorrelate(
    template,
    science,
    candidates,
    config,
    sigmas,
    *,
    mode,
    subtract_background,
    preserve_bits=0,
    reference=None,
    preconvolution=None,
    decorrelation=None,
    qa=None,
    check=True,
    sky=None,
    halo=0,
):
    """Fit, subtract, decorrelate and measure the QA ratios in one jitted program.

    Everything of ip_diffim's ``AlardLuptonSubtractTask`` after the kernel sources are chosen:
    :func:`subtract_images`; in convolveScience mode the template and background scaled by
    ``1/κ``; the bad pixels filled with the median and the difference decorrelated
    (:mod:`jaxdiffim.core.decorrelation`); non-finite difference pixels flagged ``NO_DATA``;
    ``SUSPECT`` on the ``halo`` around saturated pixels; the residual sky of the difference
    removed (``sky``); the background image; and :func:`jaxdiffim.core.quality.footprint_ratios`
    on the QA stars. The fit status is returned, not raised: the caller applies its policies.

    Parameters
    ----------
    template, science : MaskedImage
        Shape (H, W). ``science`` is the image whose variance enters the decorrelation as the
        science image's (the unfiltered one for a score image).
    candidates : Candidates
    config : KernelFitConfig
    sigmas : array_like
        Alard-Lupton widths in pixels.
    mode : {"convolveTemplate", "convolveScience"}
    subtract_background : bool
    preserve_bits : int
        Mask bits of the convolved image copied without smearing.
    reference : MaskedImage, optional
        The image the kernel is fitted to and subtracted from (default ``science``; the
        preconvolved science image for a score image). QA ratios are measured against it.
    preconvolution : Array, shape (p, p), optional
        Unit-sum preconvolution kernel (score image).
    decorrelation : Decorrelation, optional
        ``None``: no decorrelation.
    qa : tuple (x, y, valid, radius), optional
        QA star table (shape (n,) each, see :func:`jaxdiffim.algorithms.quality.qa_table`; may
        be traced) and footprint radius in pixels (a concrete number); default an empty
        table.
    check : bool
        Validate the fit inputs on the host.
    sky : tuple (int, int), optional
        ``(bin side in pixels, mask bits left out)``: remove the difference's residual sky
        (:func:`jaxdiffim.core.background.source_free_sky`), after the decorrelation.
    halo : int
        Side of the square that grows the ``SAT`` and ``SAT_TEMPLATE`` pixels of both inputs
        into ``SUSPECT`` (0: none). It enters the program traced, as do the QA footprints'
        radius (their square is bucketed), so that another seeing compiles nothing.

    Returns
    -------
    SubtractionArrays
    """
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}.")
    reference = science if reference is None else reference
    convolved, fitted_to = (
        (template, reference) if mode == "convolveTemplate" else (reference, template)
    )
    sigmas, bbox = prepare_fit_arguments(
        convolved.image,
        fitted_to.image,
        convolved.variance,
        fitted_to.variance,
        candidates,
        config,
        sigmas,
        None,
        check,
    )
    if qa is None:
        empty = np.zeros(16, np.float32)
        qa = (empty, empty, np.zeros(16, bool), 1.0)
    x, y, valid, radius = qa
    if isinstance(radius, jax.core.Tracer):
        raise InvalidInputError(
            "the QA footprint radius must be a concrete number (it sets a static footprint "
            "size); the star table (x, y, valid) may be traced."
        )
    # the square's half-side bucketed (15, 31, 63, ...: a disc of 5 sigma up to FWHM 7 px in
    # the first): another seeing compiles nothing (the disc itself is traced)
    square = window_bound(int(np.ceil(float(radius))), min_bits=4)
    qa = (
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y, jnp.float32),
        jnp.asarray(valid, bool),
        np.float32(radius),
    )
    with forward_mode_hint():
        out = programs.call(
            _subtract_and_decorrelate,
            template,
            science,
            reference,
            candidates,
            sigmas,
            bbox,
            config,
            preconvolution,
            qa,
            np.int32(halo),
            mode=mode,
            subtract_background=bool(subtract_background),
            preserve_bits=int(preserve_bits),
            decorrelation=decorrelation,
            qa_square=square,
            sky=None if sky is None else (int(sky[0]), int(sky[1])),
            halo_bound=window_bound(halo) if halo else 0,
        )
    if out.matched_science is None:  # not returned by the program: no copy of the input
        out = out._replace(matched_science=reference)
    return out
