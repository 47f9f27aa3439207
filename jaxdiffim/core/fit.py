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
import numpy as np

from ..errors import InvalidInputError, SingularSystemError
from . import status as st
from .basis import alard_lupton_parts, delta_function_basis
from .config import KernelFitConfig
from .normal_equations import (
    add_background_column,
    al_raw_design,
    df_raw_design,
    expand_spatial_solution,
    spatial_layout,
    spatial_normal_equations,
    stamp_normal_equations,
)
from .precision import FIT_DTYPE, fit_precision
from .regularization import regularization_lambda, regularization_matrix
from .solve import condition_number, jacobi_cholesky_solve, solve_with_fallback
from .spatial import spatial_terms
from .stamps import Candidates, cut_stamps, stamp_inside
from .stats import (
    cell_ids,
    clipped_mean_std,
    precedence,
    quantile_masked,
    residual_statistics,
    visit_window,
)

__all__ = [
    "DEFAULT_SIGMAS",
    "Basis",
    "StampSystems",
    "KernelSolution",
    "make_basis",
    "stamp_systems",
    "solve_stamps",
    "stamp_residual_statistics",
    "candidate_coefficients",
    "fit_kernel",
    "fit_single_stamp",
    "fit_kernel_jit",
    "fit_stamps_jit",
    "prepare_fit_arguments",
    "image_bbox",
]

#: ip_diffim's ``alardSigGauss`` default, in pixels.
DEFAULT_SIGMAS = (0.7, 1.5, 3.0)

#: The subtraction defaults.
DEFAULT_CONFIG = KernelFitConfig()


class Basis(NamedTuple):
    """A kernel basis ready for fitting (pytree).

    Attributes
    ----------
    images : Array, shape (n_b, k, k)
        Basis kernel images (afw orientation).
    transform : Array, shape (n_b + 1, n_b + 1)
        ``blockdiag(T, 1)`` from raw design columns to the basis (identity for delta functions).
    factors : Array, shape (n_f, k)
        Separable 1-D factors of the raw Alard-Lupton terms (empty for delta functions).
    """

    images: jax.Array
    transform: jax.Array
    factors: jax.Array


class StampSystems(NamedTuple):
    """Per-stamp least-squares data (pytree), in the fit dtype.

    Attributes
    ----------
    design : Array, shape (N, n_b + 1, P)
        Raw design on the ``P = L²`` fit pixels, background column last.
    target : Array, shape (N, P)
        Science pixels.
    var_science : Array, shape (N, P)
        Science variance on the fit pixels.
    var_template : Array, shape (N, S, S)
        Template variance on the whole stamp (for ``K² ⊛ var``).
    m, b : Array, shapes (N, n_b + 1, n_b + 1) and (N, n_b + 1)
        Normal equations in the basis (with ``lambda H`` for a regularised delta basis).
    ok : Array of bool, shape (N,)
        Usable candidates.
    """

    design: jax.Array
    target: jax.Array
    var_science: jax.Array
    var_template: jax.Array
    m: jax.Array
    b: jax.Array
    ok: jax.Array


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


def make_basis(config, sigmas=None, dtype=FIT_DTYPE):
    """Build the configured basis.

    Parameters
    ----------
    config : KernelFitConfig
    sigmas : array_like, shape (len(config.degrees),), optional
        Gaussian widths in pixels for the Alard-Lupton basis (default :data:`DEFAULT_SIGMAS`);
        traced, so differentiable.
    dtype : dtype

    Returns
    -------
    Basis
    """
    k = config.kernel_size
    if config.is_alard_lupton:
        sigmas = jnp.asarray(DEFAULT_SIGMAS if sigmas is None else sigmas).astype(dtype)
        phi, t, images = alard_lupton_parts(sigmas, config.degrees, k)
    else:
        phi = jnp.zeros((0, k), dtype)
        images = delta_function_basis(k, dtype)
        t = jnp.eye(k * k, dtype=dtype)
    n = images.shape[0]
    t_aug = jnp.zeros((n + 1, n + 1), dtype).at[:n, :n].set(t).at[n, n].set(1.0)
    return Basis(images, t_aug, phi)


def stamp_systems(t, s, vt, vs, ok, basis, config):
    """Normal equations of every stamp (port of ``StaticKernelSolution::build``).

    Parameters
    ----------
    t, s, vt, vs : Array, shape (N, S, S)
        Template, science and their variances around each candidate, ``S >= k``.
    ok : Array of bool, shape (N,)
        Candidates to use; the others are replaced by harmless values (zero weight later).
    basis : Basis
    config : KernelFitConfig

    Returns
    -------
    StampSystems
    """
    k = config.kernel_size
    h = k // 2
    side = t.shape[-1] - k + 1
    mask = ok[:, None, None]
    t = jnp.where(mask, t, 0.0)
    s = jnp.where(mask, s, 0.0)
    vt = jnp.where(mask, vt, 1.0)
    vs = jnp.where(mask, vs, 1.0)
    if config.is_alard_lupton:
        raw = al_raw_design(t, basis.factors, config.degrees)
    else:
        raw = df_raw_design(t, k)
    design = add_background_column(raw)
    n = t.shape[0]
    target = s[:, h : h + side, h : h + side].reshape(n, -1)
    var_science = vs[:, h : h + side, h : h + side].reshape(n, -1)
    var_total = vs + vt
    if config.constant_variance_weighting:
        whole = var_total.reshape(n, -1)
        median = quantile_masked(whole, jnp.ones_like(whole, bool), 0.5)
        weight = 1.0 / jnp.where(median > 0, median, 1.0)
    else:
        weight = 1.0 / var_total[:, h : h + side, h : h + side].reshape(n, -1)
    m_raw, b_raw = stamp_normal_equations(design, target, weight, config.fit_for_background)
    tr = basis.transform
    m = jnp.einsum("ir,nrs,js->nij", tr, m_raw, tr)
    b = jnp.einsum("ir,nr->ni", tr, b_raw)
    if not config.is_alard_lupton and config.use_regularization:
        hmat = regularization_matrix(
            k,
            config.regularization_type,
            stencil=config.central_regularization_stencil,
            orders=config.forward_regularization_orders,
            border_penalty=config.regularization_border_penalty,
            fit_background=True,
        )
        lam = regularization_lambda(
            m, hmat, config.lambda_type, config.lambda_value, config.lambda_scaling
        )
        m = m + jnp.asarray(lam, m.dtype)[..., None, None] * jnp.asarray(hmat, m.dtype)
    return StampSystems(design, target, var_science, vt, m, b, ok)


def solve_stamps(systems):
    """Solve every stamp's system. Returns coefficients ``(N, n_b + 1)`` and a finite mask.

    A singular stamp system gets the eigen pseudo-inverse, as ip_diffim's
    ``KernelSolution::solve`` falls back to (PSF-model stamps smaller than the basis count are
    singular yet valid). Used on ``stop_gradient`` data only.
    """
    a = jax.vmap(lambda m, b: solve_with_fallback(m, b).x)(systems.m, systems.b)
    return a, jnp.all(jnp.isfinite(a), axis=1)


def _correlate_stamps(images, kernels):
    """Valid correlation of each image with its own kernel: (N,S,S) x (N,k,k) -> (N,L,L).

    Circular correlation at the stamp size is wrap-free on the valid ``L = S - k + 1`` corner,
    so one small batched FFT does it (a grouped ``lax.conv`` with one group per stamp measured
    ~28 s for 512 stamps in float64 on CPU; this takes milliseconds).
    """
    side = images.shape[-1]
    k = kernels.shape[-1]
    padded = jnp.zeros(images.shape, kernels.dtype).at[:, :k, :k].set(kernels)
    spec = jnp.fft.rfft2(images) * jnp.conj(jnp.fft.rfft2(padded))
    n_out = side - k + 1
    return jnp.fft.irfft2(spec, s=(side, side))[:, :n_out, :n_out]


def stamp_residual_statistics(systems, basis, coefficients):
    """Residual mean and rms (in noise units) of every stamp for given coefficients.

    ``D = s - (K ⊛ t + bg)`` and ``var = var_s + K² ⊛ var_t`` on the fit pixels, as ip_diffim's
    ``ImageStatistics`` sees them (the afw edge of the stamp is exactly the excluded border).

    Parameters
    ----------
    systems : StampSystems
    basis : Basis
    coefficients : Array, shape (N, n_b + 1)
        Basis coefficients and background of each stamp.

    Returns
    -------
    mean, rms : Array, shape (N,)
    """
    n_b = basis.images.shape[0]
    raw = coefficients @ basis.transform
    diff = systems.target - jnp.einsum("nrp,nr->np", systems.design, raw)
    kernels = jnp.einsum("ni,ivu->nvu", coefficients[:, :n_b], basis.images)
    kvar = _correlate_stamps(systems.var_template, kernels**2)
    var = systems.var_science + kvar.reshape(kvar.shape[0], -1)
    good = jnp.broadcast_to(systems.ok[:, None], diff.shape)
    return residual_statistics(diff, var, good)


def candidate_coefficients(kernel_coefficients, background_coefficients, p, q):
    """Stamp coefficients ``(N, n_b + 1)`` of the spatial model at the candidates' positions."""
    a = jnp.einsum("ik,ck->ci", kernel_coefficients, p)
    if q.shape[1] == 0:
        bg = jnp.zeros((p.shape[0], 1), a.dtype)
    else:
        bg = (q @ background_coefficients)[:, None]
    return jnp.concatenate([a, bg], axis=1)


def _is_bad(mean, rms, clip, config):
    bad = jnp.isnan(mean) | jnp.isnan(rms)
    if clip:
        bad = bad | (jnp.abs(mean) > config.candidate_residual_mean_max)
        bad = bad | (rms > config.candidate_residual_std_max)
    return bad


def image_bbox(shape):
    """Inclusive pixel box ``(0, 0, W - 1, H - 1)`` of an array of ``shape`` (H, W)."""
    return (0.0, 0.0, float(shape[1] - 1), float(shape[0] - 1))


def _spatial_functions(candidates, bbox, config, dtype):
    x = candidates.x.astype(dtype)
    y = candidates.y.astype(dtype)
    p = spatial_terms(x, y, config.spatial_kernel_order, bbox, config.spatial_model_type)
    if config.fit_for_background:
        q = spatial_terms(x, y, config.spatial_bg_order, bbox, config.spatial_model_type)
    else:
        q = jnp.zeros((x.shape[0], 0), dtype)
    return p, q


def _select_candidates(systems, basis, single, p, q, cells, rating, layout, config):
    """Ip_diffim's rejection loop on ``stop_gradient`` data; returns the final selection."""
    n_b = basis.images.shape[0]
    n_kt = p.shape[1]
    n_bt = q.shape[1]
    a_single, finite_single = single
    ksum = a_single[:, :n_b] @ jnp.sum(basis.images, axis=(1, 2))
    ksum = jnp.where(systems.ok & finite_single, ksum, jnp.nan)  # NaN: not fitted
    mean, rms = stamp_residual_statistics(systems, basis, a_single)
    single_bad = ~finite_single | _is_bad(mean, rms, config.single_kernel_clipping, config)
    ok = systems.ok
    ahead = precedence(cells, rating)

    def active_set(rej):
        good = ok & ~rej & ~single_bad
        vis = visit_window(good, ahead, config.n_star_per_cell)
        return good & vis, rej | (ok & ~rej & single_bad & vis)

    def clip_round(_, carry):
        rej, _ = carry
        active, rej = active_set(rej)
        if config.kernel_sum_clipping:
            kmean, kstd = clipped_mean_std(ksum, active)
            kbad = active & (jnp.abs(ksum - kmean) > config.max_ksum_sigma * kstd)
        else:
            kbad = jnp.zeros_like(active)
        return rej | kbad, ~jnp.any(kbad)

    def spatial_round(carry):
        rej, _, _, settled, n_iter = carry
        rej, converged = jax.lax.fori_loop(0, config.max_clip_rounds, clip_round, (rej, False))
        active, rej = active_set(rej)
        m_sp, r_sp = spatial_normal_equations(
            systems.m, systems.b, active.astype(systems.m.dtype), p, q, layout
        )
        theta = solve_with_fallback(m_sp, r_sp).x
        kc, bc = expand_spatial_solution(theta, n_b, n_kt, n_bt, layout)
        coeff = candidate_coefficients(kc, bc, p, q)
        smean, srms = stamp_residual_statistics(systems, basis, coeff)
        sbad = active & _is_bad(smean, srms, config.spatial_kernel_clipping, config)
        return rej | sbad, ~jnp.any(sbad), active, settled & converged, n_iter + 1

    def maybe_round(_, carry):
        return jax.lax.cond(carry[1], lambda c: c, spatial_round, carry)

    init = (jnp.zeros_like(ok), jnp.array(False), jnp.zeros_like(ok), jnp.array(True), 0)
    rej, _, active, settled, n_iter = jax.lax.fori_loop(
        0, config.max_spatial_iterations, maybe_round, init
    )
    # The final fit of ip_diffim after the last round: rejected candidates leave, none enter.
    return active & ~rej, rej, ksum, settled, n_iter


@jax.jit
def fit_kernel_jit(
    template, science, template_variance, science_variance, candidates, sigmas, bbox, *, config
):
    """Jitted core of :func:`fit_kernel` (no input validation; call inside :func:`fit_precision`).

    Parameters are those of :func:`fit_kernel`; ``bbox`` is an array of 4 floats and ``sigmas``
    an array (ignored for the delta-function basis).

    Returns
    -------
    KernelSolution
    """
    size = config.stamp_size
    inside = stamp_inside(candidates, science.shape, size)
    stamps = [
        cut_stamps(img, candidates, size).astype(FIT_DTYPE)
        for img in (template, science, template_variance, science_variance)
    ]
    out = jnp.result_type(template, science)  # hand results back in the caller's precision
    return fit_stamps_jit(*stamps, candidates, sigmas, bbox, inside, jnp.dtype(out), config=config)


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
    dtype = FIT_DTYPE
    out = t.dtype if out is None else out
    t, s, vt, vs = (a.astype(dtype) for a in (t, s, vt, vs))
    finite = jnp.all(
        jnp.isfinite(t) & jnp.isfinite(s) & jnp.isfinite(vt) & jnp.isfinite(vs), axis=(1, 2)
    )
    ok = candidates.valid & inside & finite
    if not config.constant_variance_weighting:  # ip_diffim: "cannot inverse variance weight"
        ok = ok & (jnp.min(jnp.where(jnp.isfinite(vt + vs), vt + vs, 1.0), axis=(1, 2)) > 0)

    basis = make_basis(config, sigmas, dtype)
    systems = stamp_systems(t, s, vt, vs, ok, basis, config)
    bbox = jnp.asarray(bbox, dtype)
    p, q = _spatial_functions(candidates, bbox, config, dtype)
    n_b = basis.images.shape[0]
    layout = spatial_layout(n_b, p.shape[1], q.shape[1], config.is_alard_lupton)

    frozen = jax.lax.stop_gradient((systems, basis))
    single = solve_stamps(frozen[0])
    cells = cell_ids(candidates.x, candidates.y, bbox, config.size_cell_x, config.size_cell_y)
    used, rejected, ksum, settled, n_iter = _select_candidates(
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


def _check_images(arrays, names):
    shape = None
    for arr, name in zip(arrays, names, strict=True):
        if np.ndim(arr) != 2:
            raise InvalidInputError(f"{name} must be a 2-D image, got shape {np.shape(arr)}.")
        if not jnp.issubdtype(jnp.result_type(arr), jnp.floating):
            raise InvalidInputError(f"{name} must be a floating-point image, got {arr.dtype}.")
        if shape is None:
            shape = np.shape(arr)
        elif np.shape(arr) != shape:
            raise InvalidInputError(
                f"{name} has shape {np.shape(arr)} but {names[0]} has {shape}; the template must "
                "be resampled onto the science pixel grid (same shape) before fitting."
            )
    return shape


def prepare_fit_arguments(
    template, science, template_variance, science_variance, candidates, config, sigmas, bbox, check
):
    """Validate the inputs of a fit (host side, before tracing) and fill in defaults.

    Returns
    -------
    sigmas : Array
        The Gaussian widths (empty for the delta-function basis).
    bbox : Array, shape (4,)
    """
    if check:
        shape = _check_images(
            (template, science, template_variance, science_variance),
            ("template", "science", "template_variance", "science_variance"),
        )
        _check_candidates(candidates, shape, config)
    if not config.is_alard_lupton:
        sigmas = None
    elif sigmas is None:
        if len(config.degrees) != len(DEFAULT_SIGMAS):
            raise InvalidInputError(
                f"give sigmas for the {len(config.degrees)} Gaussians of degrees {config.degrees}."
            )
        sigmas = DEFAULT_SIGMAS
    elif np.shape(sigmas) != (len(config.degrees),):
        raise InvalidInputError(
            f"sigmas must have one width per Gaussian ({len(config.degrees)}), "
            f"got shape {np.shape(sigmas)}."
        )
    sigmas = jnp.zeros(0) if sigmas is None else _as_float(sigmas)
    if bbox is None:
        bbox = image_bbox(np.shape(science))
    elif np.shape(bbox) != (4,):
        raise InvalidInputError(f"bbox must be (x_min, y_min, x_max, y_max), got {bbox}.")
    return sigmas, _as_float(bbox)


def _as_float(x):
    """As a JAX array of the default float dtype if it is not floating already (so integer
    boxes or widths do not compile a second program)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


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
    with fit_precision():
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


def _check_candidates(candidates, shape, config):
    if not isinstance(candidates, Candidates):
        raise InvalidInputError(
            "candidates must be a jaxdiffim.Candidates; build one with "
            "make_candidates(x, y, rating)."
        )
    if isinstance(candidates.valid, jax.core.Tracer):
        return
    valid = np.asarray(candidates.valid)
    if not valid.any():
        raise InvalidInputError("the candidate list has no valid entry; give at least one source.")
    size = config.stamp_size
    if min(shape) < size:
        raise InvalidInputError(
            f"the images ({shape[0]}x{shape[1]}) are smaller than one {size}x{size} stamp "
            f"(2 * kernel_size + 1); use a smaller kernel or larger images."
        )
    inside = np.asarray(stamp_inside(candidates, shape, size)) & valid
    if not inside.any():
        raise InvalidInputError(
            f"no candidate has its {size}x{size} stamp inside the image; candidates must lie at "
            f"least {size // 2} pixels from every edge."
        )


def fit_single_stamp(template, science, template_variance, science_variance, config, sigmas=None):
    """Fit one kernel (no spatial variation) on a single pair of stamps of any size >= k.

    The stamp-level solver of ip_diffim (``KernelCandidate::build``): the design is built on
    the part of the stamp where every basis correlation is defined (the stamp shrunk by
    ``k // 2`` on every side).

    Parameters
    ----------
    template, science, template_variance, science_variance : array_like, shape (S, S)
    config : KernelFitConfig
    sigmas : array_like, optional

    Returns
    -------
    coefficients : Array, shape (n_b,)
    kernel : Array, shape (k, k)
        ``sum_i a_i B_i`` in afw orientation.
    kernel_sum : Array, shape ()
    background : Array, shape ()

    Raises
    ------
    InvalidInputError
        Shapes differ or are smaller than the kernel, non-finite pixels, or a variance <= 0
        (ip_diffim: "cannot inverse variance weight").
    SingularSystemError
        The stamp's normal equations are singular.
    """
    arrays = [np.asarray(a) for a in (template, science, template_variance, science_variance)]
    shape = _check_images(arrays, ("template", "science", "template_variance", "science_variance"))
    if shape[0] != shape[1] or shape[0] < config.kernel_size:
        raise InvalidInputError(
            f"stamps must be square and at least kernel_size={config.kernel_size} wide, "
            f"got {shape}."
        )
    if not all(np.isfinite(a).all() for a in arrays):
        raise InvalidInputError("the stamps contain non-finite pixels; mask or crop them first.")
    if np.min(arrays[2] + arrays[3]) <= 0:
        raise InvalidInputError(
            "the summed variance of the stamps has values <= 0; cannot weight by inverse variance."
        )
    sigmas, _ = prepare_fit_arguments(*arrays, None, config, sigmas, (0, 0, 1, 1), False)
    out = jnp.result_type(arrays[0], arrays[1])
    with fit_precision():
        coeff, kernel, ksum, bg = _fit_single_stamp_jit(*arrays, sigmas, config=config)
    if not np.all(np.isfinite(np.asarray(coeff))):
        raise SingularSystemError("the stamp's normal equations are singular.")
    return tuple(x.astype(out) for x in (coeff, kernel, ksum, bg))


@jax.jit
def _fit_single_stamp_jit(t, s, vt, vs, sigmas, *, config):
    dtype = FIT_DTYPE
    t, s, vt, vs = (a.astype(dtype)[None] for a in (t, s, vt, vs))
    basis = make_basis(config, sigmas, dtype)
    systems = stamp_systems(t, s, vt, vs, jnp.ones(1, bool), basis, config)
    a = jacobi_cholesky_solve(systems.m[0], systems.b[0])
    n_b = basis.images.shape[0]
    kernel = jnp.einsum("i,ivu->vu", a[:n_b], basis.images)
    return a[:n_b], kernel, jnp.sum(kernel), a[n_b]
