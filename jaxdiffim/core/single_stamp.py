"""One stamp, one kernel: ip_diffim's single-kernel solution on a pair of stamps.

Port of ``StaticKernelSolution``/``RegularizedKernelSolution`` for one stamp (no candidates, no
spatial model): the kernel and background that best match ``template`` to ``science``, with
ip_diffim's pseudo-inverse fallback for a singular system.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError, SingularSystemError
from .fit_arguments import check_images, prepare_fit_arguments
from .precision import FIT_DTYPE, fit_precision
from .solve import jacobi_cholesky_solve
from .stamp_fit import make_basis, stamp_systems

__all__ = ["fit_single_stamp"]


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
    shape = check_images(arrays, ("template", "science", "template_variance", "science_variance"))
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
