"""Configuration of the PSF-matching kernel fit: static structure and traced numbers in one.

Field names are the snake_case forms of ip_diffim's ``PsfMatchConfig`` / ``PsfMatchConfigAL`` /
``PsfMatchConfigDF`` fields (``spatialKernelOrder`` -> ``spatial_kernel_order``, ...). Defaults
are those the subtraction tasks use (``AlardLuptonSubtractBaseConfig.setDefaults``): kernel
spatial order 1, background order 2, background fitted. Everything that fixes an array shape or
the program structure is here; the Gaussian widths are a traced argument of the fit instead, so
they can be differentiated.

:class:`KernelFitConfig` is a JAX pytree (``jax.tree_util.register_dataclass``): the fields in
:data:`NUMBER_FIELDS` (clipping limits, regularisation strength and border penalty) are its
leaves, traced when the config is passed to a jitted function, and every other field is static
structure. Changing a number never recompiles, and the numbers can be differentiated or
``vmap``-ed; changing the structure (sizes, orders, basis, loop counts) compiles anew.
"""

import dataclasses

import jax

from ..errors import InvalidInputError
from .basis import WIDTH_RULE, n_alard_lupton
from .spatial import SPATIAL_MODEL_TYPES, n_spatial_terms

__all__ = ["KernelFitConfig", "KERNEL_BASES", "NUMBER_FIELDS"]

KERNEL_BASES = ("alard-lupton", "delta-function")

#: Fields traced inside ``jit`` (the pytree leaves); all the others are static.
NUMBER_FIELDS = (
    "candidate_residual_mean_max",
    "candidate_residual_std_max",
    "max_ksum_sigma",
    "regularization_border_penalty",
    "lambda_value",
    "lambda_scaling",
)


@dataclasses.dataclass(frozen=True)
class KernelFitConfig:
    """Configuration of :func:`jaxdiffim.core.fit.fit_kernel` (validated on construction).

    Attributes
    ----------
    kernel_basis : {"alard-lupton", "delta-function"}
        ``kernelBasisSet``.
    kernel_size : int
        Odd kernel width in pixels (``kernelSize``; use
        :func:`jaxdiffim.core.basis.alard_lupton_sigmas` for the ``scaleByFwhm`` rule).
    degrees : tuple of int
        Polynomial degree per Gaussian (``alardDegGauss``).
    spatial_kernel_order, spatial_bg_order : int
        Orders of the spatial kernel and background models.
    fit_for_background : bool
        Fit a differential background (``fitForBackground``).
    spatial_model_type : {"chebyshev1", "polynomial"}
        ``spatialModelType``.
    constant_variance_weighting : bool
        Weight each stamp by ``1 / median(var_s + var_t)`` (True, ip_diffim's default) or per pixel.
    single_kernel_clipping, kernel_sum_clipping, spatial_kernel_clipping : bool
        Candidate rejection stages.
    candidate_residual_mean_max, candidate_residual_std_max : float
        Limits on ``|mean|`` and rms of the stamp residual in units of its noise.
    max_ksum_sigma : float
        Kernel-sum clip in standard deviations.
    max_spatial_iterations : int
        Spatial fit / assessment rounds (1..5).
    n_star_per_cell : int
        Candidates visited per cell (<= 0: all).
    size_cell_x, size_cell_y : int
        Spatial cell size in pixels.
    max_clip_rounds : int
        Bound of the single-kernel / kernel-sum loop inside one spatial round (ip_diffim loops
        until nothing is rejected; here a fixed-length loop, reported if it did not settle).
    use_regularization, regularization_type, central_regularization_stencil,
    forward_regularization_orders, regularization_border_penalty, lambda_type, lambda_value,
    lambda_scaling
        Delta-function regularisation (ignored for the Alard-Lupton basis).
    """

    kernel_basis: str = "alard-lupton"
    kernel_size: int = WIDTH_RULE["kernel_size"]
    degrees: tuple = (4, 2, 2)
    spatial_kernel_order: int = 1
    spatial_bg_order: int = 2
    fit_for_background: bool = True
    spatial_model_type: str = "chebyshev1"
    constant_variance_weighting: bool = True
    single_kernel_clipping: bool = True
    kernel_sum_clipping: bool = True
    spatial_kernel_clipping: bool = True
    candidate_residual_mean_max: float = 0.25
    candidate_residual_std_max: float = 1.5
    max_ksum_sigma: float = 3.0
    max_spatial_iterations: int = 3
    n_star_per_cell: int = 5
    size_cell_x: int = 128
    size_cell_y: int = 128
    max_clip_rounds: int = 8
    use_regularization: bool = True
    regularization_type: str = "centralDifference"
    central_regularization_stencil: int = 9
    forward_regularization_orders: tuple = (1, 2)
    regularization_border_penalty: float = 3.0
    lambda_type: str = "absolute"
    lambda_value: float = 0.2
    lambda_scaling: float = 1e-4

    def __post_init__(self):
        object.__setattr__(self, "degrees", tuple(int(d) for d in self.degrees))
        orders = tuple(int(o) for o in self.forward_regularization_orders)
        object.__setattr__(self, "forward_regularization_orders", orders)
        if self.kernel_basis not in KERNEL_BASES:
            raise InvalidInputError(
                f"kernel_basis must be one of {KERNEL_BASES}, got {self.kernel_basis!r}."
            )
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise InvalidInputError(
                f"kernel_size must be an odd integer >= 3, got {self.kernel_size}; "
                "ip_diffim requires odd kernels so that they have a central pixel."
            )
        if self.spatial_model_type not in SPATIAL_MODEL_TYPES:
            raise InvalidInputError(
                f"spatial_model_type must be one of {SPATIAL_MODEL_TYPES}, "
                f"got {self.spatial_model_type!r}."
            )
        for name in ("spatial_kernel_order", "spatial_bg_order"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 1 <= self.max_spatial_iterations <= 5:
            raise InvalidInputError(
                f"max_spatial_iterations must be in 1..5, got {self.max_spatial_iterations}."
            )
        if min(self.size_cell_x, self.size_cell_y) < 32:
            raise InvalidInputError("size_cell_x and size_cell_y must be >= 32 pixels.")
        if self.max_clip_rounds < 1:
            raise InvalidInputError("max_clip_rounds must be >= 1.")
        penalty = self.regularization_border_penalty
        if isinstance(penalty, (int, float)) and penalty < 0:
            raise InvalidInputError(f"regularization_border_penalty must be >= 0, got {penalty}.")
        if any(d < 0 for d in self.degrees) or not self.degrees:
            raise InvalidInputError(f"degrees must be non-negative integers, got {self.degrees}.")

    @property
    def is_alard_lupton(self):
        """True for the Alard-Lupton basis (whose first term has no spatial variation)."""
        return self.kernel_basis == "alard-lupton"

    @property
    def n_basis(self):
        """Number of basis kernels."""
        if self.is_alard_lupton:
            return n_alard_lupton(self.degrees)
        return self.kernel_size**2

    @property
    def n_kernel_terms(self):
        """Number of spatial terms of the kernel model."""
        return n_spatial_terms(self.spatial_kernel_order)

    @property
    def n_background_terms(self):
        """Number of background coefficients (1, fixed at 0, when no background is fitted)."""
        return n_spatial_terms(self.spatial_bg_order) if self.fit_for_background else 1

    @property
    def stamp_size(self):
        """Side of the stamp around each candidate, ``2 kernel_size + 1``."""
        return 2 * self.kernel_size + 1

    def replace(self, **changes):
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    KernelFitConfig,
    data_fields=list(NUMBER_FIELDS),
    meta_fields=[
        f.name for f in dataclasses.fields(KernelFitConfig) if f.name not in NUMBER_FIELDS
    ],
)
