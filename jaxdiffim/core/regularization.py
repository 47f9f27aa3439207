"""Regularisation of delta-function kernels: finite-difference penalty matrices ``H = BᵀB``.

Port of ip_diffim ``src/BasisLists.cc`` (``makeRegularizationMatrix``,
``makeCentralDifferenceMatrix``, ``makeForwardDifferenceMatrix``) and of the lambda choice in
``RegularizedKernelSolution::solve``. Pixel ``i`` of the kernel is ``(x, y) = (i % k, i // k)``
(row-major, as :func:`jaxdiffim.core.basis.delta_function_basis`). With a fitted background, ``H``
has
an extra zero row and column for it. Built once on the host with numpy (the matrices are
constants of the configuration).
"""

import functools

import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "central_difference_matrix",
    "forward_difference_matrix",
    "regularization_matrix",
    "regularization_lambda",
]

_STENCILS = {
    5: np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),
    9: np.array([[1.0, 4.0, 1.0], [4.0, -20.0, 4.0], [1.0, 4.0, 1.0]]) / 6.0,
}
_FORWARD = {1: [-1.0, 1.0], 2: [-1.0, 2.0, -1.0], 3: [-1.0, 3.0, -3.0, 1.0]}


def _check_penalty(border_penalty):
    if border_penalty < 0:
        raise InvalidInputError(f"border_penalty must be >= 0, got {border_penalty}.")


def central_difference_matrix(kernel_size, stencil=9, border_penalty=3.0):
    """Laplacian ``B`` (k² x k²): the stencil on interior pixels, the penalty on the border.

    Parameters
    ----------
    kernel_size : int
    stencil : {5, 9}
        5-point ``[0 1 0; 1 -4 1; 0 1 0]`` or 9-point ``[1 4 1; 4 -20 4; 1 4 1] / 6``.
    border_penalty : float
        Diagonal value for border pixels (>= 0).
    """
    if stencil not in _STENCILS:
        raise InvalidInputError(f"central regularization stencil must be 5 or 9, got {stencil}.")
    _check_penalty(border_penalty)
    k = kernel_size
    coeff = _STENCILS[stencil]
    b = np.zeros((k * k, k * k))
    for i in range(k * k):
        x, y = i % k, i // k
        if 0 < x < k - 1 and 0 < y < k - 1:
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    b[i, i + dx + dy * k] = coeff[dx + 1, dy + 1]
        else:
            b[i, i] = border_penalty
    return b


def forward_difference_matrix(kernel_size, orders=(1, 2), border_penalty=3.0):
    """Sum over ``orders`` of forward-difference operators along x and y (k² x k²).

    Near the far edges the order tapers down; on the last column or row only the
    ``border_penalty`` diagonal is left (ip_diffim's convention).
    """
    _check_penalty(border_penalty)
    if len(orders) == 0 or any(o not in _FORWARD for o in orders):
        raise InvalidInputError(f"forward regularization orders must be in 1..3, got {orders}.")
    k = kernel_size
    coeff = {0: [border_penalty], **_FORWARD}
    total = np.zeros((k * k, k * k))
    for order in orders:
        for i in range(k * k):
            x, y = i % k, i // k
            ox = min(k - 1 - x, order)
            for j, c in enumerate(coeff[ox]):
                total[i, i + j] += c
            oy = min(k - 1 - y, order)
            for j, c in enumerate(coeff[oy]):
                total[i, i + j * k] += c
    return total


def _operator(kernel_size, regularization_type, stencil, orders, border_penalty):
    if regularization_type == "centralDifference":
        return central_difference_matrix(kernel_size, stencil, border_penalty)
    if regularization_type == "forwardDifference":
        return forward_difference_matrix(kernel_size, orders, border_penalty)
    raise InvalidInputError(
        "regularization_type must be 'centralDifference' or 'forwardDifference', "
        f"got {regularization_type!r}."
    )


@functools.lru_cache(maxsize=8)
def _quadratic_pieces(kernel_size, regularization_type, stencil, orders):
    """``H(p) = H0 + p H1 + p² H2`` for border penalty ``p`` (``B`` is linear in ``p``)."""
    b0 = _operator(kernel_size, regularization_type, stencil, orders, 0.0)
    b1 = _operator(kernel_size, regularization_type, stencil, orders, 1.0) - b0
    return b0.T @ b0, b0.T @ b1 + b1.T @ b0, b1.T @ b1


def regularization_matrix(
    kernel_size,
    regularization_type="centralDifference",
    *,
    stencil=9,
    orders=(1, 2),
    border_penalty=3.0,
    fit_background=True,
):
    """``H = BᵀB`` for a delta-function basis, with a zero background row/column if fitted.

    ``border_penalty`` may be a traced JAX scalar (then ``H`` is a JAX array): ``H`` is built
    from three constant pieces, quadratic in the penalty.

    Returns
    -------
    ndarray or jax.Array, shape (k² + fit_background, k² + fit_background)
    """
    concrete = isinstance(border_penalty, (int, float, np.floating))
    if concrete:
        _check_penalty(border_penalty)
    h0, h1, h2 = _quadratic_pieces(
        int(kernel_size), regularization_type, int(stencil), tuple(int(o) for o in orders)
    )
    xp = np if concrete else jnp
    h = h0 + border_penalty * h1 + border_penalty**2 * h2
    if fit_background:
        h = xp.pad(h, ((0, 1), (0, 1)))
    return h


def regularization_lambda(m, h, lambda_type, lambda_value, lambda_scaling):
    """Strength of the penalty in ``(M + lambda H) a = b``.

    ``absolute``: ``lambda_value``; ``relative``: ``tr(M) / tr(H) * lambda_scaling``. Works on
    NumPy or JAX arrays (``m`` may be batched on leading axes).
    """
    if lambda_type == "absolute":
        return lambda_value
    if lambda_type == "relative":
        tr_m = (m * np.eye(m.shape[-1])).sum(axis=(-2, -1))
        return tr_m / (h * np.eye(h.shape[-1])).sum() * lambda_scaling
    raise InvalidInputError(
        f"lambda_type must be 'absolute' or 'relative', got {lambda_type!r} (the risk-minimising "
        "choices of ip_diffim read config keys that do not exist and are not supported)."
    )
