"""Kernel-fit configs with ip_diffim's names (``PsfMatchConfigAL``/``DF``, ``MakeKernelConfig``).

They translate to the core's :class:`~jaxdiffim.core.config.KernelFitConfig` through the one
table of :mod:`jaxdiffim.tasks.config_map` (:func:`kernel_fit_config`, :func:`basis_for`).
Defaults are ip_diffim's ``PsfMatchConfig`` defaults; the subtraction tasks override the
spatial orders and ``fitForBackground`` in their ``setDefaults``, as ip_diffim does.
Fields ip_diffim declares but does not use (``useBicForKernelBasis``, ...), PCA of the
delta-function kernels (not implemented) and ``badMaskPlanes`` (stamps with masked pixels are
left out by the kernel-source selection instead) are left out.
"""

from ..algorithms.kernel_sources import kernel_setup
from ..core.basis import WIDTH_RULE as _W
from .base import Task
from .config_map import kernel_core_config
from .pex_config import ChoiceField, Config, ConfigChoiceField, Field, ListField

__all__ = [
    "PsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "MakeKernelConfig",
    "MakeKernelTask",
    "kernel_fit_config",
    "basis_for",
]


def _odd(v):
    return v >= 3 and v % 2 == 1


class PsfMatchConfig(Config):
    """Fields shared by both bases (ip_diffim ``PsfMatchConfig``)."""

    kernelSize = Field(
        "Odd kernel width in pixels (replaced when scaleByFwhm).", int, _W["kernel_size"], _odd
    )
    scaleByFwhm = Field("Scale kernel size and basis widths with the PSF FWHMs.", bool, True)
    kernelSizeFwhmScaling = Field(
        "Kernel width = this x largest basis sigma.", float, _W["kernel_size_fwhm_scaling"]
    )
    kernelSizeMin = Field("Minimum kernel width.", int, _W["kernel_size_min"])
    kernelSizeMax = Field("Maximum kernel width.", int, _W["kernel_size_max"])
    spatialModelType = ChoiceField(
        "Spatial model of kernel and background.",
        str,
        {"chebyshev1": "Chebyshev polynomials", "polynomial": "plain polynomials"},
        "chebyshev1",
    )
    spatialKernelOrder = Field("Spatial order of the kernel.", int, 2, lambda v: v >= 0)
    spatialBgOrder = Field("Spatial order of the background.", int, 1, lambda v: v >= 0)
    fitForBackground = Field("Fit a differential background.", bool, False)
    sizeCellX = Field("Cell width in pixels.", int, 128, lambda v: v >= 32)
    sizeCellY = Field("Cell height in pixels.", int, 128, lambda v: v >= 32)
    nStarPerCell = Field("Candidates visited per cell (-1: all).", int, 5)
    maxSpatialIterations = Field("Spatial rejection rounds.", int, 3, lambda v: 1 <= v <= 5)
    singleKernelClipping = Field("Reject candidates with bad stamp residuals.", bool, True)
    kernelSumClipping = Field("Reject kernel-sum outliers.", bool, True)
    spatialKernelClipping = Field("Reject candidates badly fit by the spatial model.", bool, True)
    candidateResidualMeanMax = Field("|mean| limit of stamp residuals (sigma).", float, 0.25)
    candidateResidualStdMax = Field("rms limit of stamp residuals (sigma).", float, 1.5)
    maxKsumSigma = Field("Kernel-sum clip in standard deviations.", float, 3.0)
    constantVarianceWeighting = Field("One weight per stamp (median variance).", bool, True)


class PsfMatchConfigAL(PsfMatchConfig):
    """Alard-Lupton basis (ip_diffim ``PsfMatchConfigAL``)."""

    alardNGauss = Field("Number of Gaussians.", int, 3, lambda v: v >= 1)
    alardDegGauss = ListField("Polynomial degree per Gaussian.", int, [4, 2, 2], lambda v: v >= 0)
    alardSigGauss = ListField(
        "Gaussian sigmas (pixels) when not scaled.", float, list(_W["sig_gauss"])
    )
    alardGaussBeta = Field("Ratio of successive sigmas.", float, _W["gauss_beta"], lambda v: v > 0)
    alardMinSig = Field("Smallest sigma when convolving.", float, _W["min_sig"], lambda v: v > 0)
    alardMinSigDeconv = Field(
        "Smallest sigma when deconvolving.", float, _W["min_sig_deconv"], lambda v: v > 0
    )

    def validate(self):
        super().validate()
        n = self.alardNGauss
        if len(self.alardDegGauss) != n or len(self.alardSigGauss) != n:
            from .pex_config import FieldValidationError

            raise FieldValidationError(
                f"alardNGauss={n} but alardDegGauss has {len(self.alardDegGauss)} and "
                f"alardSigGauss {len(self.alardSigGauss)} entries; give one per Gaussian."
            )


class PsfMatchConfigDF(PsfMatchConfig):
    """Delta-function basis with regularisation (ip_diffim ``PsfMatchConfigDF``)."""

    useRegularization = Field("Regularise the delta-function kernel.", bool, True)
    regularizationType = ChoiceField(
        "Regularisation operator.",
        str,
        {"centralDifference": "Laplacian stencil", "forwardDifference": "forward differences"},
        "centralDifference",
    )
    centralRegularizationStencil = ChoiceField(
        "Points of the Laplacian stencil.", int, {5: "5-point", 9: "9-point"}, 9
    )
    forwardRegularizationOrders = ListField(
        "Orders of the forward differences.", int, [1, 2], lambda v: 1 <= v <= 3
    )
    regularizationBorderPenalty = Field("Penalty at the kernel border.", float, 3.0)
    lambdaType = ChoiceField(
        "How lambdaValue is interpreted.",
        str,
        {"absolute": "lambda as given", "relative": "lambda x trace ratio"},
        "absolute",
    )
    lambdaValue = Field("Regularisation strength.", float, 0.2)
    lambdaScaling = Field("Scale of a relative lambda.", float, 1e-4)


class MakeKernelConfig(Config):
    """``MakeKernelConfig``: the basis choice and the PSF-FWHM grid fallback."""

    kernel = ConfigChoiceField(
        "Kernel basis.", {"AL": PsfMatchConfigAL, "DF": PsfMatchConfigDF}, default="AL"
    )
    fwhmExposureGrid = Field("Grid size of the mean-FWHM fallback.", int, 10, lambda v: v >= 1)
    fwhmExposureBuffer = Field("Border fraction of that grid.", float, 0.05)


class MakeKernelTask(Task):
    """Holds the kernel configuration (ip_diffim's ``MakeKernelTask``; the fit runs in the core)."""

    ConfigClass = MakeKernelConfig
    _DefaultName = "makeKernel"


def _basis(config):
    return "DF" if isinstance(config, PsfMatchConfigDF) else "AL"


def kernel_fit_config(config):
    """The core's :class:`~jaxdiffim.core.config.KernelFitConfig` for a ``PsfMatchConfigAL``/``DF``
    (through :data:`~jaxdiffim.tasks.config_map.FIELD_MAP`)."""
    return kernel_core_config(config, _basis(config)).kernel


def basis_for(config, convolved_fwhm, reference_fwhm):
    """Alard-Lupton widths and the core config for ``config`` (``makeKernelBasisList``).

    Parameters
    ----------
    config : PsfMatchConfigAL or PsfMatchConfigDF
    convolved_fwhm, reference_fwhm : float
        FWHMs in pixels of the image that is convolved and of the one it is matched to.

    Returns
    -------
    sigmas : numpy.ndarray
    KernelFitConfig
        With the kernel size of the width rule (``scaleByFwhm``) or of the config.
    """
    return kernel_setup(kernel_core_config(config, _basis(config)), convolved_fwhm, reference_fwhm)
