"""jaxdiffim: differentiable Alard-Lupton PSF-matched image subtraction in JAX.

The functional core is pure and ``jit``-able: arrays in, arrays out, with a frozen
:class:`KernelFitConfig` as the only static argument. :func:`alard_lupton_subtract` and
:func:`alard_lupton_preconvolve_subtract` run the whole ip_diffim algorithm (PSF sizes, mode,
source selection, fit, decorrelation, QA) on arrays, calling the jitted core.
"""

from .alard_lupton import (
    SubtractionConfig,
    SubtractionResult,
    alard_lupton_preconvolve_subtract,
    alard_lupton_subtract,
)
from .basis import (
    FWHM_PER_SIGMA,
    alard_lupton_basis,
    alard_lupton_sigmas,
    delta_function_basis,
)
from .config import KernelFitConfig
from .convolve import MaskedImage, apply_kernel, dilate_mask, fft_correlate, term_kernels
from .decorrelation import decorrelate, decorrelate_spatially
from .detection import detect_sources
from .errors import (
    BadSubtractionError,
    InsufficientKernelSourcesError,
    InvalidInputError,
    JaxDiffimError,
    KernelFitError,
    NoKernelCandidatesError,
    NoWorkFound,
    PrecisionUnavailableError,
    SingularSystemError,
    VarianceScalingError,
)
from .fit import KernelSolution, fit_kernel, fit_kernel_jit
from .inputs import template_coverage, update_masks
from .masks import MASK_PLANES
from .pipeline import subtract_images
from .precision import fit_precision
from .preconvolution import preconvolve
from .psf_shape import choose_convolution_mode, psf_fwhm, psf_size
from .quality import footprint_residual_ratio
from .regularization import regularization_matrix
from .scale_variance import scale_variance
from .sources import select_kernel_sources
from .spatial import spatial_terms
from .stamps import Candidates, make_candidates
from .status import describe_status, raise_for_status
from .subtract import (
    Difference,
    background_image,
    kernel_image,
    subtract_convolve_science,
    subtract_convolve_template,
)

__version__ = "0.1.0"

__all__ = [
    "FWHM_PER_SIGMA",
    "MASK_PLANES",
    "BadSubtractionError",
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
    "dilate_mask",
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
    "spatial_terms",
    "subtract_convolve_science",
    "subtract_convolve_template",
    "subtract_images",
    "template_coverage",
    "term_kernels",
    "update_masks",
]
