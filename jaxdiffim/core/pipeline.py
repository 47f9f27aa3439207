"""Fit, convolve and subtract in one jitted function (the differentiable end-to-end path).

:func:`subtract_images` composes :func:`jaxdiffim.core.fit.fit_kernel_jit` with
:mod:`jaxdiffim.core.subtract`, so a scalar loss of the difference image can be differentiated with
respect to the input images and the basis widths (the candidate selection is held fixed inside
the fit).
"""

import functools

import jax
import numpy as np

from ..errors import InvalidInputError
from . import status as st
from .convolve import MaskedImage
from .fit import DEFAULT_CONFIG, fit_kernel_jit, prepare_fit_arguments
from .precision import fit_precision
from .subtract import subtract_convolve_science, subtract_convolve_template

__all__ = ["MODES", "subtract_images"]

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
    with fit_precision():
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
