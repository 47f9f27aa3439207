"""The decorrelation step on arrays, for the Task facade's ``DecorrelateALKernelTask``.

Runs :func:`jaxdiffim.core.afterburner.decorrelate_masked` -- the step the subtraction program
runs -- on its own, with ip_diffim's checks of the mean variances (:func:`check_mean_variances`,
which the subtraction shares).
"""

import functools
import logging

import jax
import numpy as np

from ..core.afterburner import Decorrelation, decorrelate_masked
from ..core.decorrelation import DECORRELATION_IGNORE_PLANES, mean_variance
from ..core.masks import FILL_BEFORE_FILTERING, bits
from ..errors import VarianceScalingError

__all__ = ["check_mean_variances", "decorrelate_difference"]

log = logging.getLogger(__name__)


def check_mean_variances(values, names):
    """ip_diffim's check of the decorrelation's mean variances (host side).

    Parameters
    ----------
    values : array_like, shape (2,)
        Mean variances of the unconvolved and the convolved image.
    names : tuple of 2 str
        What to call them in the message.

    Raises
    ------
    VarianceScalingError
        A mean variance is not finite and positive.
    """
    values = [float(v) for v in np.asarray(values)]
    for name, value in zip(names, values, strict=True):
        if not (np.isfinite(value) and value > 0):
            raise VarianceScalingError(
                f"The {name} image's variance plane has no usable positive pixels (clipped mean "
                f"{value}); give a positive variance plane or unmask some pixels."
            )
    if values[1] / values[0] > 1e8:
        log.warning("Decorrelation: variance ratio %.3g exceeds 1e8.", values[1] / values[0])


@functools.partial(jax.jit, static_argnames=("settings",))
def _decorrelate(
    difference,
    unconvolved,
    convolved,
    settings,
    kernel,
    solution,
    config,
    sigma2,
    scale,
    preconvolution,
):
    return decorrelate_masked(
        difference,
        unconvolved,
        convolved,
        settings,
        kernel=kernel,
        solution=solution,
        config=config,
        sigma2=sigma2,
        scale=scale,
        preconvolution=preconvolution,
    )


def decorrelate_difference(
    difference,
    kernel,
    unconvolved,
    convolved,
    *,
    names=("science", "template"),
    sigma2=(None, None),
    scale=1.0,
    preconvolution=None,
    bad_planes=FILL_BEFORE_FILTERING,
    ignore_planes=DECORRELATION_IGNORE_PLANES,
    complete=False,
    spatial=None,
):
    """Whiten ``difference`` after PSF matching, with ip_diffim's checks.

    Runs :func:`jaxdiffim.core.afterburner.decorrelate_masked` (the step of the subtraction
    program) in its own jitted call.

    Parameters
    ----------
    difference : MaskedImage
        Difference (or score) image, shape (H, W).
    kernel : array_like, shape (k, k)
        Matching kernel at the centre (unnormalised); unused when ``spatial`` is given.
    unconvolved, convolved : MaskedImage
        The image that was not convolved and the one that was (their variance planes and
        masks), shape (H, W).
    names : tuple of 2 str
        What to call ``unconvolved`` and ``convolved`` in error messages.
    sigma2 : tuple of 2 float or None
        Their mean variances; ``None``: the clipped mean over pixels without ``ignore_planes``.
    scale : float
        Factor on the new variance plane (``1 / κ²`` in convolveScience mode).
    preconvolution : array_like, shape (p, p), optional
        Unit-sum preconvolution kernel (score image).
    bad_planes, ignore_planes : tuple of str
        Planes filled with the median before filtering (with
        :data:`~jaxdiffim.core.masks.FILL_BEFORE_DECORRELATION`, always); planes left out of
        the mean variances.
    complete : bool
        ``completeVarPlanePropagation``.
    spatial : tuple (KernelSolution, KernelFitConfig, int), optional
        Decorrelate with the spatially varying kernel on ``n``² nodes.

    Returns
    -------
    MaskedImage

    Raises
    ------
    VarianceScalingError
        An input's variance plane has no usable positive pixels.
    """
    solution = config = None
    n_nodes = 0
    if spatial is not None:
        solution, config, n_nodes = spatial
        kernel = None
    settings = Decorrelation(
        n_nodes=int(n_nodes),
        complete=bool(complete),
        fill_bits=bits(tuple(bad_planes)),
        ignore_bits=bits(tuple(ignore_planes)),
    )
    s2 = [
        mean_variance(m.variance, m.mask, tuple(ignore_planes)) if given is None else given
        for m, given in zip((unconvolved, convolved), sigma2, strict=True)
    ]
    check_mean_variances(s2, names)
    dtype = np.asarray(difference.image).dtype
    out, _ = _decorrelate(
        difference,
        unconvolved,
        convolved,
        settings,
        None if kernel is None else np.asarray(kernel, dtype),
        solution,
        config,
        np.asarray([float(v) for v in s2], np.float32),
        scale,
        preconvolution,
    )
    return out
