"""The spatially varying PSF-matching kernel fit: stamps, candidate rejection, spatial solve.

Port of ip_diffim ``PsfMatchTask._solve`` with its visitors (``BuildSingleKernelVisitor``,
``KernelSumVisitor``, ``BuildSpatialKernelVisitor``, ``AssessSpatialKernelVisitor``),
ip_diffim.md §2.3-§2.6, as one pure function that runs under a single ``jit``:

1. cut a ``(2k+1)²`` stamp of both images around every candidate; candidates whose stamp leaves
   the image or holds a non-finite pixel are invalid, and so, with per-pixel weighting, are those
   with a variance <= 0 (ip_diffim throws per stamp; with constant weighting it substitutes the
   median, or 1, first);
2. build each stamp's normal equations (:mod:`jaxdiffim.core.normal_equations`) and solve them;
3. reject candidates as ip_diffim does, with fixed-length masked loops: single-kernel residual
   limits, kernel-sum clipping over the visited candidates (``n_star_per_cell`` per cell, by
   rating), a spatial fit, a spatial assessment, up to ``max_spatial_iterations`` rounds, then
   one last spatial fit without the newly rejected candidates;
4. solve the spatial system once more, now with derivatives (the selection is held fixed).

Only step 4 carries derivatives: the selection is computed on ``stop_gradient`` copies, because
discrete choices have no derivative. Deliberate differences from ip_diffim: no PCA basis
(``usePcaForSpatialKernel``), the Cholesky/pseudo-inverse solve of :mod:`jaxdiffim.core.solve` in
place of ``FullPivLU``, and ordinary-polynomial spatial terms on normalised coordinates (the same
function space as ip_diffim's raw coordinates, so the same fitted kernel, far better conditioned).
The delta-function basis adds the regulariser ``lambda H`` to every stamp's system, which then
also regularises the spatial fit.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import status as st
from .config import KernelFitConfig
from .fit_arguments import prepare_fit_arguments
from .normal_equations import (
    expand_spatial_solution,
    spatial_layout,
    spatial_normal_equations,
)
from .precision import FIT_DTYPE, float64_program, forward_mode_hint
from .rejection import select_candidates, spatial_functions
from .solve import condition_number, solve_with_fallback
from .spatial import spatial_terms
from .stamp_fit import make_basis, solve_stamps, stamp_systems
from .stamps import cut_stamps, stamp_inside
from .stats import cell_ids
from .widths import guard_widths

__all__ = [
    "KernelSolution",
    "fit_kernel",
    "fit_kernel_jit",
    "fit_stamps",
    "fit_stamps_jit",
    "prepare_fit_arguments",
    "usable_systems",
]


#: The subtraction defaults.
DEFAULT_CONFIG = KernelFitConfig()


class KernelSolution(NamedTuple):
    """Result of :func:`fit_kernel` (pytree).

    The kernel at pixel ``(x, y)`` is ``K = sum_i (sum_k kernel_coefficients[i, k] f_k(x, y)) B_i``
    with ``f_k`` the spatial terms over ``bbox`` (:func:`jaxdiffim.core.spatial.spatial_terms`),
    and the
    background is ``sum_m background_coefficients[m] g_m(x, y)``.

    Attributes
    ----------
    basis : Array, shape (n_b, k, k)
    kernel_coefficients : Array, shape (n_b, n_kernel_terms)
        Basis 0 of an Alard-Lupton fit has exactly zero non-constant terms.
    background_coefficients : Array, shape (n_background_terms,)
    bbox : Array, shape (4,)
        ``(x_min, y_min, x_max, y_max)`` normalising the spatial terms.
    kernel_sum : Array, shape ()
        Kernel sum at the centre of ``bbox`` (ip_diffim's ``spatialKernelSum``).
    condition_number : Array, shape ()
        Eigenvalue condition number of the spatial normal matrix (``spatialConditionNum``).
    status : Array of int32, shape ()
        Bits of :mod:`jaxdiffim.core.status`.
    used, rejected : Array of bool, shape (capacity,)
        Candidates in the final spatial fit; candidates rejected by clipping.
    candidate_kernel_sums : Array, shape (capacity,)
        Kernel sum of each candidate's own stamp solution (NaN for candidates that could not
        be fitted: padding, stamps off the image, non-finite pixels, non-positive variance).
    n_spatial_iterations : Array of int32, shape ()
        Spatial fit rounds run (1..max_spatial_iterations).
    """

    basis: jax.Array
    kernel_coefficients: jax.Array
    background_coefficients: jax.Array
    bbox: jax.Array
    kernel_sum: jax.Array
    condition_number: jax.Array
    status: jax.Array
    used: jax.Array
    rejected: jax.Array
    candidate_kernel_sums: jax.Array
    n_spatial_iterations: jax.Array


@jax.jit
def fit_kernel_jit(
    template, science, template_variance, science_variance, candidates, sigmas, bbox, *, config
):
    """Jitted core of :func:`fit_kernel` (no input validation).

    Parameters are those of :func:`fit_kernel`; ``bbox`` is an array of 4 floats and ``sigmas``
    an array (ignored for the delta-function basis).

    Returns
    -------
    KernelSolution
    """
    stamps, inside = fit_stamps(
        template, science, template_variance, science_variance, candidates, config
    )
    out = jnp.result_type(template, science)  # hand results back in the caller's precision
    return fit_stamps_jit(*stamps, candidates, sigmas, bbox, inside, jnp.dtype(out), config=config)


def fit_stamps(template, science, template_variance, science_variance, candidates, config):
    """The four images' stamps around the candidates (their dtype, shape (N, S, S) each) and
    whether each stamp lies on the image (shape (N,)); jittable."""
    size = config.stamp_size
    inside = stamp_inside(candidates, science.shape, size)
    stamps = [
        cut_stamps(img, candidates, size)
        for img in (template, science, template_variance, science_variance)
    ]
    return stamps, inside


def usable_systems(t, s, vt, vs, candidates, sigmas, inside, config):
    """Which candidates can be fitted, the basis and every stamp's normal equations (the first
    step of :func:`fit_stamps_jit`; jittable).

    Returns
    -------
    ok : Array of bool, shape (N,)
    basis : Basis
    systems : StampSystems
    """
    finite = jnp.all(
        jnp.isfinite(t) & jnp.isfinite(s) & jnp.isfinite(vt) & jnp.isfinite(vs), axis=(1, 2)
    )
    ok = candidates.valid & inside & finite
    if not config.constant_variance_weighting:  # ip_diffim: "cannot inverse variance weight"
        ok = ok & (jnp.min(jnp.where(jnp.isfinite(vt + vs), vt + vs, 1.0), axis=(1, 2)) > 0)
    basis = make_basis(config, sigmas, FIT_DTYPE)
    return ok, basis, stamp_systems(t, s, vt, vs, ok, basis, config)


@functools.partial(jax.jit, static_argnames=("out",))
def fit_stamps_jit(t, s, vt, vs, candidates, sigmas, bbox, inside=True, out=None, *, config):
    """The fit from stamps already cut (the part of :func:`fit_kernel_jit` after cutting).

    Used directly to match PSF *models* (``ModelPsfMatchTask``): the stamps are PSF images
    realised at the candidate positions, which are still the positions of the spatial model.

    Parameters
    ----------
    t, s, vt, vs : Array, shape (N, S, S)
        Convolved-image, reference-image and variance stamps, ``S >= kernel_size``, centred on
        the candidates (``N`` = the candidates' capacity).
    candidates : Candidates
    sigmas : Array
    bbox : Array, shape (4,)
    inside : bool or Array of bool, shape (N,)
        Candidates whose stamps lie on the image.
    out : dtype, optional
        Dtype of the results (default: that of ``t``).
    config : KernelFitConfig
        Structure static, numbers traced (:mod:`jaxdiffim.core.config`).

    Returns
    -------
    KernelSolution
    """
    out = t.dtype if out is None else out
    inside = jnp.broadcast_to(jnp.asarray(inside, bool), candidates.valid.shape)
    fit = float64_program(functools.partial(_fit_from_stamps, out=out))
    return fit(t, s, vt, vs, candidates, sigmas, bbox, inside, config)


def _fit_from_stamps(t, s, vt, vs, candidates, sigmas, bbox, inside, config, *, out):
    """The body of :func:`fit_stamps_jit`, in float64 (see :func:`float64_program`)."""
    dtype = FIT_DTYPE
    t, s, vt, vs = (a.astype(dtype) for a in (t, s, vt, vs))
    degenerate = False
    if config.is_alard_lupton:
        sigmas, degenerate = guard_widths(jnp.asarray(sigmas, dtype))
    ok, basis, systems = usable_systems(t, s, vt, vs, candidates, sigmas, inside, config)
    bbox = jnp.asarray(bbox, dtype)
    p, q = spatial_functions(candidates, bbox, config, dtype)
    n_b = basis.images.shape[0]
    layout = spatial_layout(n_b, p.shape[1], q.shape[1], config.is_alard_lupton)

    frozen = jax.lax.stop_gradient((systems, basis))
    single = solve_stamps(frozen[0])
    cells = cell_ids(candidates.x, candidates.y, bbox, config.size_cell_x, config.size_cell_y)
    used, rejected, ksum, settled, n_iter = select_candidates(
        frozen[0], frozen[1], single, p, q, cells, candidates.rating, layout, config
    )
    used = jax.lax.stop_gradient(used)

    m_sp, r_sp = spatial_normal_equations(systems.m, systems.b, used.astype(dtype), p, q, layout)
    result = solve_with_fallback(m_sp, r_sp)
    kc, bc = expand_spatial_solution(result.x, n_b, p.shape[1], q.shape[1], layout)
    if q.shape[1] == 0:
        bc = jnp.zeros((1,), dtype)
    centre = spatial_terms(
        0.5 * (bbox[0] + bbox[2]),
        0.5 * (bbox[1] + bbox[3]),
        config.spatial_kernel_order,
        bbox,
        config.spatial_model_type,
    )
    kernel_sum = (kc @ centre) @ jnp.sum(basis.images, axis=(1, 2))

    status = jnp.where(jnp.any(used), st.OK, st.NO_CANDIDATES)
    # fewer candidates than spatial terms can never constrain the spatial model
    too_few = jnp.sum(used) < max(p.shape[1], q.shape[1])
    status = status | jnp.where(too_few, st.SINGULAR, 0)
    status = status | jnp.where(result.used_fallback, st.SINGULAR, 0)
    status = status | jnp.where(result.finite, 0, st.NONFINITE)
    status = status | jnp.where(settled, 0, st.NOT_CONVERGED)
    status = status | jnp.where(degenerate, st.DEGENERATE_BASIS, 0)
    return KernelSolution(
        basis=basis.images.astype(out),
        kernel_coefficients=kc.astype(out),
        background_coefficients=bc.astype(out),
        bbox=bbox.astype(out),
        kernel_sum=kernel_sum.astype(out),
        condition_number=condition_number(m_sp).astype(out),
        status=status.astype(jnp.int32),
        used=used,
        rejected=rejected,
        candidate_kernel_sums=ksum.astype(out),
        n_spatial_iterations=jnp.asarray(n_iter, jnp.int32),
    )


def fit_kernel(
    template,
    science,
    template_variance,
    science_variance,
    candidates,
    config=DEFAULT_CONFIG,
    sigmas=None,
    bbox=None,
    *,
    check=True,
):
    """Fit the spatially varying PSF-matching kernel ``K`` with ``K ⊛ template + bg ≈ science``.

    Parameters
    ----------
    template : Array, shape (H, W)
        Image to be convolved (the template in ``convolveTemplate`` mode), in its own units.
    science : Array, shape (H, W)
        Image it is matched to, on the same pixel grid.
    template_variance, science_variance : Array, shape (H, W)
        Variance planes (units²).
    candidates : Candidates
        Fixed-capacity candidate list (:func:`jaxdiffim.core.stamps.make_candidates`), positions in
        array pixel coordinates.
    config : KernelFitConfig
        Static configuration.
    sigmas : array_like, optional
        Gaussian widths (pixels) of the Alard-Lupton basis, default :data:`DEFAULT_SIGMAS`;
        differentiable.
    bbox : sequence of 4 floats, optional
        Box normalising the spatial terms and laying out the cells, default the whole array.
    check : bool
        Validate the inputs and raise for a fatal status (default). Inside your own
        ``jit``/``grad``/``vmap`` pass False and inspect ``solution.status`` yourself.

    Returns
    -------
    KernelSolution
        Floating-point fields in the dtype of the images (the fit itself runs in float64).

    Raises
    ------
    InvalidInputError
        Wrong ranks, shapes or dtypes, mismatched sigmas, or no usable candidate position.
    NoKernelCandidatesError, SingularSystemError
        From the returned status (only with ``check=True``).
    """
    sigmas, bbox = prepare_fit_arguments(
        template,
        science,
        template_variance,
        science_variance,
        candidates,
        config,
        sigmas,
        bbox,
        check,
    )
    with forward_mode_hint():
        solution = fit_kernel_jit(
            template,
            science,
            template_variance,
            science_variance,
            candidates,
            sigmas,
            bbox,
            config=config,
        )
    if check:
        st.raise_for_status(solution.status)
    return solution
