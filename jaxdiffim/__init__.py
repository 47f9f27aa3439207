"""jaxdiffim: differentiable Alard-Lupton PSF-matched image subtraction in JAX.

The functional core is pure and ``jit``-able: arrays in, arrays out, with a frozen
:class:`KernelFitConfig` as the only static argument. :func:`alard_lupton_subtract` and
:func:`alard_lupton_preconvolve_subtract` run the whole ip_diffim algorithm (PSF sizes, mode,
source selection, fit, decorrelation, QA) on arrays, calling the jitted core.

The Task layer (ip_diffim's names: :class:`AlardLuptonSubtractTask`, exposures, FITS) lives in
:mod:`jaxdiffim.tasks` and :mod:`jaxdiffim.image`; its main names are also reachable here
(imported on first use, so ``import jaxdiffim`` stays light).
"""

from .algorithms.alard_lupton import alard_lupton_preconvolve_subtract, alard_lupton_subtract
from .algorithms.config import SubtractionConfig
from .algorithms.detection import detect_sources
from .algorithms.footprints import source_footprints
from .algorithms.inputs import template_coverage, update_masks
from .algorithms.psf_estimate import estimate_psf
from .algorithms.psf_grid import estimate_psf_grid
from .algorithms.psf_shape import choose_convolution_mode, psf_fwhm, psf_size
from .algorithms.quality import footprint_residual_ratio
from .algorithms.result import SubtractionResult
from .algorithms.scale_variance import scale_variance
from .algorithms.sources import select_kernel_sources
from .core.afterburner import Decorrelation
from .core.basis import (
    FWHM_PER_SIGMA,
    alard_lupton_basis,
    alard_lupton_sigmas,
    delta_function_basis,
)
from .core.config import KernelFitConfig
from .core.convolve import MaskedImage, apply_kernel, dilate_mask, fft_correlate, term_kernels
from .core.decorrelation import decorrelate, decorrelate_spatially, fill_bad_pixels
from .core.fit import KernelSolution, fit_kernel, fit_kernel_jit
from .core.masks import MASK_PLANES
from .core.pipeline import SubtractionArrays, subtract_and_decorrelate, subtract_images
from .core.precision import fit_precision
from .core.preconvolution import preconvolve
from .core.regularization import regularization_matrix
from .core.spatial import spatial_terms
from .core.stamps import Candidates, make_candidates
from .core.status import describe_status, raise_for_status
from .core.subtract import (
    Difference,
    background_image,
    kernel_image,
    subtract_convolve_science,
    subtract_convolve_template,
)
from .errors import (
    BadSubtractionError,
    InputFileError,
    InsufficientKernelSourcesError,
    InvalidInputError,
    JaxDiffimError,
    KernelFitError,
    NoKernelCandidatesError,
    NoWorkFound,
    OutputExistsError,
    PrecisionUnavailableError,
    SingularSystemError,
    VarianceScalingError,
)

__version__ = "0.1.0"

__all__ = [
    "Decorrelation",
    "SubtractionArrays",
    "FWHM_PER_SIGMA",
    "MASK_PLANES",
    "BadSubtractionError",
    "InputFileError",
    "Candidates",
    "Difference",
    "InsufficientKernelSourcesError",
    "InvalidInputError",
    "JaxDiffimError",
    "KernelFitConfig",
    "KernelFitError",
    "KernelSolution",
    "MaskedImage",
    "NoKernelCandidatesError",
    "NoWorkFound",
    "OutputExistsError",
    "PrecisionUnavailableError",
    "SingularSystemError",
    "SubtractionConfig",
    "SubtractionResult",
    "VarianceScalingError",
    "alard_lupton_basis",
    "alard_lupton_preconvolve_subtract",
    "alard_lupton_sigmas",
    "alard_lupton_subtract",
    "apply_kernel",
    "background_image",
    "choose_convolution_mode",
    "decorrelate",
    "decorrelate_spatially",
    "delta_function_basis",
    "describe_status",
    "detect_sources",
    "estimate_psf",
    "estimate_psf_grid",
    "dilate_mask",
    "fill_bad_pixels",
    "fft_correlate",
    "fit_kernel",
    "fit_kernel_jit",
    "fit_precision",
    "footprint_residual_ratio",
    "kernel_image",
    "make_candidates",
    "preconvolve",
    "psf_fwhm",
    "psf_size",
    "raise_for_status",
    "regularization_matrix",
    "scale_variance",
    "select_kernel_sources",
    "source_footprints",
    "spatial_terms",
    "subtract_convolve_science",
    "subtract_convolve_template",
    "subtract_and_decorrelate",
    "subtract_images",
    "template_coverage",
    "term_kernels",
    "update_masks",
]

#: Task-layer names importable from the top level, and the module that defines each.
_LAZY = {
    name: "jaxdiffim.tasks"
    for name in (
        "AlardLuptonSubtractTask",
        "AlardLuptonSubtractConfig",
        "AlardLuptonPreconvolveSubtractTask",
        "AlardLuptonPreconvolveSubtractConfig",
        "DecorrelateALKernelTask",
        "DecorrelateALKernelConfig",
        "MakeKernelTask",
        "MakeKernelConfig",
        "ModelPsfMatchTask",
        "ModelPsfMatchConfig",
        "PsfMatchConfig",
        "PsfMatchConfigAL",
        "PsfMatchConfigDF",
        "Struct",
        "Task",
    )
}
_LAZY.update(
    {
        name: "jaxdiffim.image"
        for name in (
            "Exposure",
            "Box2I",
            "GaussianPsf",
            "DoubleGaussianPsf",
            "ImagePsf",
            "GridImagePsf",
        )
    }
)
_LAZY.update({name: "jaxdiffim.io" for name in ("read_exposure", "write_exposure")})


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxdiffim' has no attribute {name!r}")
