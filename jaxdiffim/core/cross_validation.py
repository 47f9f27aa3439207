"""Held-out residuals of the kernel fit: how well a kernel model predicts stars it was not fitted
to (a jaxdiffim addition, used to choose the direction of the convolution).

The usable candidates are dealt round-robin into folds; for each fold the spatial model is
fitted (plain spatial least squares over the other folds' stamps, no clipping) and the held-out
stamps' residuals ``z = (s - K ⊛ t - bg) / σ`` are measured with it (``σ² = var_s + K² ⊛
var_t``). A candidate's score is ``mean(z)² + rms(z)²`` over its stamp: about 1 for a model as
good as the noise, more where the kernel is wrong. Unlike the in-sample residuals that ip_diffim
clips on, held-out residuals do not reward fitting the noise of the image that is convolved.

The stamp systems are those of :func:`jaxdiffim.core.fit.fit_stamps_jit`.
"""

import functools

import jax
import jax.numpy as jnp

from . import programs
from .fit import fit_stamps, usable_systems
from .normal_equations import expand_spatial_solution, spatial_layout, spatial_normal_equations
from .precision import FIT_DTYPE
from .rejection import spatial_functions
from .solve import solve_with_fallback
from .stamp_fit import candidate_coefficients, stamp_residual_statistics

__all__ = ["N_FOLDS", "heldout_scores"]

#: Folds of the cross-validation.
N_FOLDS = 4


def heldout_scores(
    template,
    science,
    template_variance,
    science_variance,
    candidates,
    sigmas,
    bbox,
    *,
    config,
    n_folds=N_FOLDS,
):
    """Held-out residual score of every candidate (call inside ``fit_precision``).

    Parameters
    ----------
    template, science, template_variance, science_variance : Array, shape (H, W)
        The image that is convolved, the one it is matched to, and their variances (as for
        :func:`jaxdiffim.core.fit.fit_kernel`).
    candidates : Candidates
    sigmas : Array
        Alard-Lupton widths (ignored for the delta-function basis).
    bbox : Array, shape (4,)
        Box normalising the spatial terms.
    config : KernelFitConfig
    n_folds : int (static)

    Returns
    -------
    Array, shape (capacity,)
        ``mean² + rms²`` of each candidate's held-out stamp residuals; NaN for unusable
        candidates (padding, off the image, non-finite pixels).
    """
    return programs.call(
        _heldout_scores,
        template,
        science,
        template_variance,
        science_variance,
        candidates,
        sigmas,
        bbox,
        config,
        n_folds=n_folds,
    )


@functools.partial(jax.jit, static_argnames=("n_folds",))
def _heldout_scores(template, science, tv, sv, candidates, sigmas, bbox, config, *, n_folds):
    (t, s, vt, vs), inside = fit_stamps(template, science, tv, sv, candidates, config)
    dtype = FIT_DTYPE
    t, s, vt, vs = (a.astype(dtype) for a in (t, s, vt, vs))
    ok, basis, systems = usable_systems(t, s, vt, vs, candidates, sigmas, inside, config)
    p, q = spatial_functions(candidates, jnp.asarray(bbox, dtype), config, dtype)
    n_b = basis.images.shape[0]
    layout = spatial_layout(n_b, p.shape[1], q.shape[1], config.is_alard_lupton)
    fold = jnp.cumsum(ok) % n_folds  # usable candidates dealt round-robin

    def held_out(f):
        train = (ok & (fold != f)).astype(dtype)
        m_sp, r_sp = spatial_normal_equations(systems.m, systems.b, train, p, q, layout)
        theta = solve_with_fallback(m_sp, r_sp).x
        kc, bc = expand_spatial_solution(theta, n_b, p.shape[1], q.shape[1], layout)
        if q.shape[1] == 0:
            bc = jnp.zeros((1,), dtype)
        mean, rms = stamp_residual_statistics(systems, basis, candidate_coefficients(kc, bc, p, q))
        return jnp.where(fold == f, mean**2 + rms**2, 0.0)

    scores = jnp.sum(jax.lax.map(held_out, jnp.arange(n_folds)), axis=0)
    return jnp.where(ok & jnp.isfinite(scores), scores, jnp.nan)
