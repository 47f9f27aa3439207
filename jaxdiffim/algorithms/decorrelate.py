"""The decorrelation step on arrays: one dispatch for the subtraction and the Task.

Wraps :func:`jaxdiffim.core.decorrelation.decorrelate` (one kernel) and
:func:`~jaxdiffim.core.decorrelation.decorrelate_spatially` (a grid of kernels) with what
ip_diffim's ``DecorrelateALKernelTask.run`` does around them: the clipped mean variances of both
inputs (checked), and the bad pixels filled with the median before filtering.
"""

import logging

import numpy as np

from ..core.decorrelation import (
    DECORRELATION_IGNORE_PLANES,
    decorrelate,
    decorrelate_spatially,
    fill_bad_pixels,
    mean_variance,
)
from ..core.masks import FILL_BEFORE_FILTERING
from ..errors import VarianceScalingError

__all__ = ["decorrelate_difference"]

log = logging.getLogger(__name__)


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
    """Whiten ``difference`` after PSF matching.

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
        Planes filled with the median before filtering; planes left out of the mean variances.
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
    s2 = []
    for name, masked, given in zip(names, (unconvolved, convolved), sigma2, strict=True):
        value = (
            float(mean_variance(masked.variance, masked.mask, tuple(ignore_planes)))
            if given is None
            else float(given)
        )
        if not (np.isfinite(value) and value > 0):
            raise VarianceScalingError(
                f"The {name} image's variance plane has no usable positive pixels (clipped mean "
                f"{value}); give a positive variance plane or unmask some pixels."
            )
        s2.append(value)
    if s2[1] / s2[0] > 1e8:
        log.warning("Decorrelation: variance ratio %.3g exceeds 1e8.", s2[1] / s2[0])
    common = (unconvolved.variance, convolved.variance, s2[0], s2[1], preconvolution, scale)
    filled = fill_bad_pixels(difference, tuple(bad_planes))
    if spatial is not None:
        solution, kernel_config, n_nodes = spatial
        return decorrelate_spatially(
            filled, solution, *common, config=kernel_config, n_nodes=n_nodes, complete=complete
        )
    kernel = np.asarray(kernel).astype(np.asarray(filled.image).dtype)
    return decorrelate(filled, kernel, *common, complete=complete)
