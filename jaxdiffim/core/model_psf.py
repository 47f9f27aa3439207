"""Matching one PSF *model* to another: the functional core of ``ModelPsfMatchTask``.

ip_diffim (ip_diffim.md §1, §2.10, §3.4) realises both PSF models at the centre of every
``size_cell_x`` x ``size_cell_y`` cell of the exposure's bbox grown by one cell, pads the two
images to a common odd size, fits a spatially varying Alard-Lupton kernel that turns the
exposure's PSF into the reference (constant unit variance, no clipping), overwrites the constant
coefficient of the first basis with the requested kernel sum, and convolves the exposure with
the kernel normalised to unit sum. Here the pairs of PSF images are the stamps of the ordinary
fit (:func:`jaxdiffim.core.fit.fit_stamps_jit`): no second solver.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError
from . import status as st
from .fit import fit_stamps_jit
from .precision import fit_precision
from .stamps import make_candidates
from .subtract import matched_image

__all__ = [
    "cell_centres",
    "next_odd",
    "psf_pad_size",
    "recentre",
    "fit_psf_models",
    "set_kernel_sum",
    "apply_normalized_kernel",
]


def next_odd(value):
    """The smallest odd integer >= ``value`` (afw's ``nextOddInteger``)."""
    n = int(math.ceil(value))
    return n if n % 2 == 1 else n + 1


def cell_centres(width, height, size_cell_x, size_cell_y):
    """Centres of the cells tiling the bbox grown by one cell, and that grown bbox.

    Parameters
    ----------
    width, height : int
        Exposure size in pixels.
    size_cell_x, size_cell_y : int

    Returns
    -------
    x, y : ndarray, shape (n,)
        Array-pixel positions (they may lie outside the image).
    bbox : tuple
        ``(x_min, y_min, x_max, y_max)`` of the grown box, inclusive, array pixels.
    """
    x0, y0 = -size_cell_x, -size_cell_y
    w, h = width + 2 * size_cell_x, height + 2 * size_cell_y
    nx, ny = max(w // size_cell_x, 1), max(h // size_cell_y, 1)
    xs = x0 + size_cell_x * np.arange(nx) + size_cell_x // 2
    ys = y0 + size_cell_y * np.arange(ny) + size_cell_y // 2
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel().astype(float), gy.ravel().astype(float), (x0, y0, x0 + w - 1, y0 + h - 1)


def psf_pad_size(psf_size, kernel_size, auto_pad=True, auto_pad_to=1.4, pad_by=0):
    """Side of the padded PSF images (ip_diffim's ``doAutoPadPsf`` / ``padPsfBy`` rule).

    Raises
    ------
    ValueError
        ``pad_by`` is odd, or the kernel does not fit (``kernel_size > size - 1``, odd).
    """
    if auto_pad:
        size = max(int(psf_size), next_odd(kernel_size * auto_pad_to))
    else:
        if pad_by % 2 != 0:
            raise InvalidInputError(f"padPsfBy ({pad_by} pixels) must be an even number.")
        size = int(psf_size) + int(pad_by)
    largest = size - 1 if (size - 1) % 2 == 1 else size - 2
    if kernel_size > largest:
        raise InvalidInputError(
            f"Kernel size ({kernel_size}) too big to match PSFs of size {size}; reduce it to at "
            f"most {largest} or pad the PSFs (doAutoPadPsf / padPsfBy)."
        )
    return size


def recentre(image, width, height):
    """``image`` on a ``width`` x ``height`` array, zero-padded or cropped about its centre.

    The centre pixels ``(n - 1) // 2`` of the input and output (afw's convention) coincide.
    """
    img = np.asarray(image, float)
    h, w = img.shape
    out = np.zeros((height, width))
    ys = np.arange(h) - (h - 1) // 2 + (height - 1) // 2
    xs = np.arange(w) - (w - 1) // 2 + (width - 1) // 2
    oky, okx = (ys >= 0) & (ys < height), (xs >= 0) & (xs < width)
    out[np.ix_(ys[oky], xs[okx])] = img[np.ix_(oky, okx)]
    return out


def fit_psf_models(science_psfs, reference_psfs, x, y, bbox, sigmas, config):
    """Fit the kernel that turns the science PSF images into the reference PSF images.

    Parameters
    ----------
    science_psfs, reference_psfs : array_like, shape (n, L, L)
        PSF images at the candidate positions, ``L >= kernel_size``.
    x, y : array_like, shape (n,)
        Candidate positions (array pixels of the exposure).
    bbox : tuple of 4 floats
        Box normalising the spatial model.
    sigmas : array_like
        Alard-Lupton widths.
    config : KernelFitConfig
        Clipping should be off (ip_diffim's ``ModelPsfMatchConfig``); the variance is 1.

    Returns
    -------
    KernelSolution
        ``status`` may carry ``SINGULAR`` (ip_diffim goes on with the pseudo-inverse, as here).

    Raises
    ------
    KernelFitError
        No usable candidate, or a non-finite solution.
    """
    t = np.asarray(science_psfs, np.float64)
    s = np.asarray(reference_psfs, np.float64)
    if t.shape != s.shape or t.ndim != 3 or t.shape[-1] < config.kernel_size:
        raise InvalidInputError(
            f"PSF image stacks must have one shape (n, L, L) with L >= kernel_size "
            f"({config.kernel_size}); got {t.shape} and {s.shape}."
        )
    cands = make_candidates(x, y)
    cap = cands.x.shape[0]
    pad = cap - t.shape[0]
    t = np.pad(t, ((0, pad), (0, 0), (0, 0)))
    s = np.pad(s, ((0, pad), (0, 0), (0, 0)))
    ones = np.ones_like(t)
    with fit_precision():
        solution = fit_stamps_jit(
            jnp.asarray(t),
            jnp.asarray(s),
            jnp.asarray(ones),
            jnp.asarray(ones),
            cands,
            jnp.asarray(sigmas, jnp.float64),
            jnp.asarray(bbox, jnp.float64),
            True,
            np.dtype(np.float64),
            config=config,
        )
    code = int(solution.status)
    st.raise_for_status(code & ~st.SINGULAR)
    return solution


def set_kernel_sum(solution, kernel_sum):
    """Overwrite the constant coefficient of the first basis with ``kernel_sum``.

    The first Alard-Lupton basis has unit sum and the others zero sum, so the kernel sum is then
    ``kernel_sum`` everywhere (ip_diffim's ``sParameters[0][0] = kernelSum``).
    """
    kc = np.array(solution.kernel_coefficients, np.float64)
    kc[0, 0] = kernel_sum
    with fit_precision():
        return solution._replace(
            kernel_coefficients=jnp.asarray(kc, jnp.float64),
            kernel_sum=jnp.asarray(kernel_sum, jnp.float64),
        )


def apply_normalized_kernel(masked, solution, config):
    """Convolve with the kernel divided by its (constant) sum (afw ``doNormalize=True``).

    Runs in the image's precision.
    """
    total = float(solution.kernel_sum)
    if not (np.isfinite(total) and total != 0):
        raise InvalidInputError(f"Cannot normalise a kernel whose sum is {total}.")
    dtype = np.asarray(masked.image).dtype

    def cast(a):
        a = np.asarray(a)
        return jnp.asarray(a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a)

    fields = {name: cast(value) for name, value in solution._asdict().items()}
    fields["kernel_coefficients"] = cast(np.asarray(solution.kernel_coefficients) / total)
    return _matched_image(masked, type(solution)(**fields), config=config)


_matched_image = jax.jit(matched_image)
