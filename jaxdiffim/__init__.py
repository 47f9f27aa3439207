"""jaxdiffim: differentiable Alard-Lupton PSF-matched image subtraction in JAX.

The functional core (everything importable from here) is pure and ``jit``-able: arrays in,
arrays out, with a frozen :class:`KernelFitConfig` as the only static argument.
"""

from .basis import (
    FWHM_PER_SIGMA,
    alard_lupton_basis,
    alard_lupton_sigmas,
    delta_function_basis,
)
from .config import KernelFitConfig
from .convolve import MaskedImage, apply_kernel, dilate_mask, fft_correlate, term_kernels
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
from .masks import MASK_PLANES
from .pipeline import subtract_images
from .precision import fit_precision
from .regularization import regularization_matrix
from .spatial import spatial_terms
from .stamps import Candidates, make_candidates
from .status import describe_status, raise_for_status
from .subtract import (
    Difference,
    background_image,
    subtract_convolve_science,
    subtract_convolve_template,
)

__version__ = "0.1.0"

__all__ = [
    "FWHM_PER_SIGMA",
    "MASK_PLANES",
    "Candidates",
    "Difference",
    "BadSubtractionError",
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
    "VarianceScalingError",
    "alard_lupton_basis",
    "alard_lupton_sigmas",
    "apply_kernel",
    "background_image",
    "delta_function_basis",
    "describe_status",
    "dilate_mask",
    "fft_correlate",
    "fit_kernel",
    "fit_kernel_jit",
    "fit_precision",
    "make_candidates",
    "raise_for_status",
    "regularization_matrix",
    "spatial_terms",
    "subtract_convolve_science",
    "subtract_convolve_template",
    "subtract_images",
    "term_kernels",
]
