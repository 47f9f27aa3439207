"""The decorrelation step as ip_diffim's ``DecorrelateALKernelTask.run`` runs it, jittable.

Around :func:`jaxdiffim.core.decorrelation.decorrelate` (one kernel) and
:func:`~jaxdiffim.core.decorrelation.decorrelate_spatially` (a grid of kernels): the clipped mean
variances of the two inputs (unless given), and the bad pixels of the difference filled with
the median before filtering, ``SUSPECT`` included (a deliberate difference from ip_diffim, see
:func:`~jaxdiffim.core.decorrelation.fill_bad_pixels` and
:data:`~jaxdiffim.core.masks.FILL_BEFORE_DECORRELATION`). The subtraction program
(:func:`jaxdiffim.core.pipeline.subtract_and_decorrelate`) and the Task facade's
``DecorrelateALKernelTask`` (through
:func:`jaxdiffim.algorithms.decorrelate.decorrelate_difference`) both run it; the host checks
of the mean variances are the caller's.
"""

from typing import NamedTuple

import jax.numpy as jnp

from .decorrelation import _mean_variance, decorrelate, decorrelate_spatially
from .masks import FILL_BEFORE_DECORRELATION, bits
from .preconvolution import fill_masked

__all__ = ["Decorrelation", "decorrelate_masked"]

#: Above this many pixels the mean variances come from a regular subsample.
_MEAN_VARIANCE_PIXELS = 1 << 20


class Decorrelation(NamedTuple):
    """Static settings of :func:`decorrelate_masked`.

    Attributes
    ----------
    n_nodes : int
        0: one kernel; ``n``: the spatially varying kernel on ``n²`` nodes
        (:func:`jaxdiffim.core.decorrelation.decorrelate_spatially`).
    complete : bool
        ``completeVarPlanePropagation``.
    fill_bits : int
        Pixels with these bits are set to the median before filtering, as are those of
        :data:`~jaxdiffim.core.masks.FILL_BEFORE_DECORRELATION` (always).
    ignore_bits : int
        Pixels with these bits are left out of the mean variances.
    """

    n_nodes: int = 0
    complete: bool = False
    fill_bits: int = 0
    ignore_bits: int = 0


def decorrelate_masked(
    difference,
    unconvolved,
    convolved,
    settings,
    *,
    kernel=None,
    solution=None,
    config=None,
    sigma2=None,
    scale=1.0,
    preconvolution=None,
):
    """Whiten ``difference`` (jittable; ``settings`` static).

    Parameters
    ----------
    difference : MaskedImage, shape (H, W)
    unconvolved, convolved : MaskedImage
        The image that was not convolved and the one that was (their input variance planes and
        masks).
    settings : Decorrelation
    kernel : Array, shape (k, k)
        The matching kernel (``settings.n_nodes == 0``).
    solution : KernelSolution
        The spatially varying kernel (``settings.n_nodes > 0``), with its ``config``.
    config : KernelFitConfig
    sigma2 : Array, shape (2,), optional
        Mean variances of ``unconvolved`` and ``convolved``; default their 3σ-clipped means
        over the pixels without ``settings.ignore_bits``.
    scale : float
        Factor on the new variance plane (``1 / κ²`` in convolveScience mode).
    preconvolution : Array, shape (p, p), optional
        Unit-sum preconvolution kernel (score image).

    Returns
    -------
    MaskedImage
        The decorrelated difference (same mask).
    sigma2 : Array, shape (2,)
        The mean variances used (NaN or <= 0 when an input has no usable variance: the
        output is then meaningless and the caller raises).
    """
    dtype = difference.image.dtype
    if sigma2 is None:
        sigma2 = jnp.stack(
            [
                _mean_variance(m.variance, m.mask, settings.ignore_bits, _MEAN_VARIANCE_PIXELS)
                for m in (unconvolved, convolved)
            ]
        )
    sigma2 = jnp.asarray(sigma2).astype(dtype)
    image = difference.image
    fill = settings.fill_bits | bits(FILL_BEFORE_DECORRELATION)
    filled = fill_masked(image, difference.mask, fill)
    filled = difference._replace(image=jnp.where(jnp.isfinite(image), filled, image))
    common = (unconvolved.variance, convolved.variance, sigma2[0], sigma2[1], preconvolution, scale)
    if settings.n_nodes:
        out = decorrelate_spatially(
            filled,
            solution,
            *common,
            config=config,
            n_nodes=settings.n_nodes,
            complete=settings.complete,
        )
    else:
        out = decorrelate(filled, kernel.astype(dtype), *common, complete=settings.complete)
    return out, sigma2
