"""Candidate rejection: ip_diffim's single-kernel, kernel-sum and spatial clipping as masked loops.

Port of the rejection in ip_diffim's ``PsfMatchTask._solve`` (``BuildSingleKernelVisitor``,
``KernelSumVisitor``, ``AssessSpatialKernelVisitor``; ip_diffim.md §2.5-§2.6): step 3 of
:mod:`jaxdiffim.core.fit`, fixed-length ``fori_loop`` loops over static capacities, so the whole
selection runs inside one ``jit``. The clipping limits are traced numbers of the config.
"""

import jax
import jax.numpy as jnp

from .normal_equations import (
    expand_spatial_solution,
    spatial_normal_equations,
)
from .solve import solve_with_fallback
from .spatial import spatial_terms
from .stamp_fit import candidate_coefficients, stamp_residual_statistics
from .stats import (
    clipped_mean_std,
    precedence,
    visit_window,
)

__all__ = ["image_bbox", "select_candidates", "spatial_functions"]


def _is_bad(mean, rms, clip, config):
    bad = jnp.isnan(mean) | jnp.isnan(rms)
    if clip:
        bad = bad | (jnp.abs(mean) > config.candidate_residual_mean_max)
        bad = bad | (rms > config.candidate_residual_std_max)
    return bad


def image_bbox(shape):
    """Inclusive pixel box ``(0, 0, W - 1, H - 1)`` of an array of ``shape`` (H, W)."""
    return (0.0, 0.0, float(shape[1] - 1), float(shape[0] - 1))


def spatial_functions(candidates, bbox, config, dtype):
    x = candidates.x.astype(dtype)
    y = candidates.y.astype(dtype)
    p = spatial_terms(x, y, config.spatial_kernel_order, bbox, config.spatial_model_type)
    if config.fit_for_background:
        q = spatial_terms(x, y, config.spatial_bg_order, bbox, config.spatial_model_type)
    else:
        q = jnp.zeros((x.shape[0], 0), dtype)
    return p, q


def select_candidates(systems, basis, single, p, q, cells, rating, layout, config):
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
    # loop flags derived from the data, so that under ``shard_map`` they carry the same
    # per-device ("varying") type as the values the loop bodies compute
    false = jnp.any(ok) & False

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
        rej, converged = jax.lax.fori_loop(0, config.max_clip_rounds, clip_round, (rej, false))
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

    init = (jnp.zeros_like(ok), false, jnp.zeros_like(ok), ~false, 0)
    rej, _, active, settled, n_iter = jax.lax.fori_loop(
        0, config.max_spatial_iterations, maybe_round, init
    )
    # The final fit of ip_diffim after the last round: rejected candidates leave, none enter.
    return active & ~rej, rej, ksum, settled, n_iter
