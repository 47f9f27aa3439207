"""``DecorrelateALKernelTask``: whiten a difference (or score) image after PSF matching.

Task form of :func:`jaxdiffim.decorrelate` / :func:`jaxdiffim.decorrelate_spatially`
(ip_diffim.md §2.9) on exposures.
"""

import numpy as np

from ..core.decorrelation import decorrelate, decorrelate_spatially, fill_bad_pixels, mean_variance
from ..core.masks import bits
from ..errors import InvalidInputError
from .base import Struct, Task
from .pex_config import Config, Field, ListField

__all__ = ["DecorrelateALKernelConfig", "DecorrelateALKernelTask"]


class DecorrelateALKernelConfig(Config):
    """ip_diffim's ``DecorrelateALKernelConfig`` (plus the spatially varying option).

    These fields apply to :class:`DecorrelateALKernelTask` (and ``finalize``). Inside
    ``AlardLuptonSubtractTask.run`` the core decorrelates with ip_diffim's default ignore planes
    and the subtraction config's ``badMaskPlanes``; only ``completeVarPlanePropagation`` and
    ``nodesPerAxis`` are passed on there.
    """

    ignoreMaskPlanes = ListField(
        "Planes left out of the mean variances.",
        str,
        ["INTRP", "EDGE", "DETECTED", "SAT", "CR", "BAD", "NO_DATA", "DETECTED_NEGATIVE"],
    )
    completeVarPlanePropagation = Field(
        "Propagate the variance planes through the filter (else Σφ² weights).", bool, False
    )
    badMaskPlanes = ListField(
        "Planes whose pixels are set to the median before filtering (jaxdiffim addition).",
        str,
        ["NO_DATA", "BAD", "SAT", "EDGE"],
    )
    nodesPerAxis = Field(
        "Filter nodes per axis for spatially varying decorrelation (jaxdiffim addition).",
        int,
        4,
        lambda v: v >= 1,
    )


class DecorrelateALKernelTask(Task):
    """Decorrelate the noise of a difference image (DMTN-021)."""

    ConfigClass = DecorrelateALKernelConfig
    _DefaultName = "decorrelate"

    def run(
        self,
        scienceExposure,  # noqa: N803 - ip_diffim's argument names
        templateExposure,  # noqa: N803
        subtractedExposure,  # noqa: N803
        psfMatchingKernel,  # noqa: N803
        preConvKernel=None,  # noqa: N803
        xcen=None,
        ycen=None,
        svar=None,
        tvar=None,
        templateMatched=True,  # noqa: N803
        preConvMode=False,  # noqa: N803
        spatiallyVarying=False,  # noqa: N803
        **kwargs,
    ):
        """Return ``Struct(correctedExposure=...)``, a decorrelated copy of ``subtractedExposure``.

        ``psfMatchingKernel`` is a :class:`~jaxdiffim.tasks.models.MatchingKernel` (evaluated at
        ``(xcen, ycen)``, default the centre) or a kernel image array (then
        ``spatiallyVarying`` is not available). ``templateMatched`` says which image was
        convolved; ``svar``/``tvar`` override the clipped-mean science/template variances;
        ``preConvKernel`` (an array, or a PSF with ``computeKernelImage``) selects the score
        form (``preConvMode``).
        """
        science, template, diff = scienceExposure, templateExposure, subtractedExposure
        ignore = tuple(self.config.ignoreMaskPlanes)
        bits(ignore)  # unknown plane names fail here, with the list of known planes
        s_mi, t_mi = science.maskedImage, template[science.getBBox()].maskedImage
        s2 = {
            "science": float(svar)
            if svar is not None
            else float(mean_variance(s_mi.variance, s_mi.mask, ignore)),
            "template": float(tvar)
            if tvar is not None
            else float(mean_variance(t_mi.variance, t_mi.mask, ignore)),
        }
        if templateMatched:
            unconvolved, convolved = s_mi, t_mi
            s2_u, s2_c, scale = s2["science"], s2["template"], 1.0
        else:
            unconvolved, convolved = t_mi, s_mi
            s2_u, s2_c = s2["template"], s2["science"]
            ksum = self._kernel_array(psfMatchingKernel, xcen, ycen).sum()
            scale = 1.0 / ksum**2
        for name, value in (("unconvolved", s2_u), ("convolved", s2_c)):
            if not (np.isfinite(value) and value > 0):
                raise InvalidInputError(
                    f"The {name} image has no usable positive variance (clipped mean {value})."
                )
        pre = None
        if preConvMode or preConvKernel is not None:
            if preConvKernel is None:
                raise InvalidInputError("preConvMode needs preConvKernel.")
            pre = np.asarray(
                preConvKernel.computeKernelImage()
                if hasattr(preConvKernel, "computeKernelImage")
                else preConvKernel,
                np.float32,
            )
            pre = pre / pre.sum()
        d_mi = fill_bad_pixels(diff.maskedImage, tuple(self.config.badMaskPlanes))
        common = (unconvolved.variance, convolved.variance, s2_u, s2_c, pre, scale)
        complete = self.config.completeVarPlanePropagation
        if spatiallyVarying:
            if not hasattr(psfMatchingKernel, "solution"):
                raise InvalidInputError("spatiallyVarying needs a MatchingKernel, not an image.")
            out = decorrelate_spatially(
                d_mi,
                psfMatchingKernel.solution,
                *common,
                config=psfMatchingKernel.config,
                n_nodes=self.config.nodesPerAxis,
                complete=complete,
            )
        else:
            kernel = self._kernel_array(psfMatchingKernel, xcen, ycen).astype(np.float32)
            out = decorrelate(d_mi, kernel, *common, complete=complete)
        corrected = diff.clone()
        corrected.image.array = np.asarray(out.image, np.float32)
        corrected.variance.array = np.asarray(out.variance, np.float32)
        return Struct(correctedExposure=corrected)

    @staticmethod
    def _kernel_array(kernel, xcen, ycen):
        if hasattr(kernel, "computeImage"):
            return np.asarray(
                kernel.computeImage(xcen, ycen) if xcen is not None else kernel.computeImage()
            )
        return np.asarray(kernel, np.float64)
