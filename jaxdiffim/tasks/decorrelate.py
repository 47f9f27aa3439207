"""``DecorrelateALKernelTask``: whiten a difference (or score) image after PSF matching.

Task form of :func:`jaxdiffim.decorrelate` / :func:`jaxdiffim.decorrelate_spatially`
(ip_diffim.md §2.9) on exposures.
"""

import numpy as np

from ..algorithms.config import SubtractionConfig
from ..algorithms.decorrelate import decorrelate_difference
from ..core.decorrelation import DECORRELATION_IGNORE_PLANES
from ..core.masks import FILL_BEFORE_FILTERING, bits
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
        list(DECORRELATION_IGNORE_PLANES),
    )
    completeVarPlanePropagation = Field(
        "Propagate the variance planes through the filter (else Σφ² weights).",
        bool,
        SubtractionConfig().complete_var_plane_propagation,
    )
    badMaskPlanes = ListField(
        "Planes whose pixels are set to the median before filtering (jaxdiffim addition).",
        str,
        list(FILL_BEFORE_FILTERING),
    )
    nodesPerAxis = Field(
        "Filter nodes per axis for spatially varying decorrelation (jaxdiffim addition).",
        int,
        SubtractionConfig().decorrelation_nodes,
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
        s_var = None if svar is None else float(svar)
        t_var = None if tvar is None else float(tvar)
        if templateMatched:
            unconvolved, convolved, scale = s_mi, t_mi, 1.0
            names, sigma2 = ("science", "template"), (s_var, t_var)
        else:
            unconvolved, convolved = t_mi, s_mi
            names, sigma2 = ("template", "science"), (t_var, s_var)
            ksum = self._kernel_array(psfMatchingKernel, xcen, ycen).sum()
            scale = 1.0 / ksum**2
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
        spatial = None
        if spatiallyVarying:
            if not hasattr(psfMatchingKernel, "solution"):
                raise InvalidInputError("spatiallyVarying needs a MatchingKernel, not an image.")
            spatial = (
                psfMatchingKernel.solution,
                psfMatchingKernel.config,
                self.config.nodesPerAxis,
            )
        out = decorrelate_difference(
            diff.maskedImage,
            None if spatial else self._kernel_array(psfMatchingKernel, xcen, ycen),
            unconvolved,
            convolved,
            names=names,
            sigma2=sigma2,
            scale=scale,
            preconvolution=pre,
            bad_planes=tuple(self.config.badMaskPlanes),
            ignore_planes=ignore,
            complete=self.config.completeVarPlanePropagation,
            spatial=spatial,
        )
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
