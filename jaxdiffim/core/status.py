"""Status bits returned from inside ``jit`` and their conversion to exceptions on the host.

A jitted function cannot raise on data-dependent conditions, so the fit returns an ``int32``
bit field; :func:`raise_for_status` turns the fatal bits into the named exceptions of
:mod:`jaxdiffim.errors` and :func:`describe_status` lists every bit in words.
"""

import jax
import numpy as np

from ..errors import (
    InvalidInputError,
    KernelFitError,
    NoKernelCandidatesError,
    SingularSystemError,
)

__all__ = [
    "OK",
    "NO_CANDIDATES",
    "SINGULAR",
    "NONFINITE",
    "NOT_CONVERGED",
    "DEGENERATE_BASIS",
    "describe_status",
    "raise_for_status",
]

OK = 0
#: No valid candidate at the start, or none left after rejection.
NO_CANDIDATES = 1
#: The spatial system is numerically singular (e.g. fewer used candidates than spatial
#: terms); the pseudo-inverse fallback was used, which leaves unconstrained terms at 0.
SINGULAR = 2
#: The final solution is not finite.
NONFINITE = 4
#: The single-kernel / kernel-sum loop was still rejecting after ``max_clip_rounds``.
NOT_CONVERGED = 8
#: The Alard-Lupton widths were unusable (below ``widths.MIN_WIDTH``, not finite, or two of
#: them nearly equal); the fit ran with ip_diffim's default widths instead (no derivative).
DEGENERATE_BASIS = 16

_MESSAGES = {
    NO_CANDIDATES: (
        "no usable kernel candidate: every candidate was padding, had a stamp outside the image "
        "or with non-finite pixels or non-positive variance, or was rejected by clipping. Give "
        "more (or brighter, isolated) candidates, or relax the clipping limits."
    ),
    SINGULAR: (
        "the spatial normal equations are singular (too few candidates for the spatial orders, "
        "or too many basis functions for the kernel size); a pseudo-inverse was used. Lower "
        "spatial_kernel_order/spatial_bg_order, add candidates, or use fewer/lower degrees."
    ),
    NONFINITE: "the kernel solution is not finite; check the inputs for NaN/inf and the variance.",
    NOT_CONVERGED: "candidate rejection had not settled after max_clip_rounds rounds.",
    DEGENERATE_BASIS: (
        "the Alard-Lupton widths are degenerate (one below 0.2 px, not finite, or two within "
        "0.1 % of each other); the fit used ip_diffim's default widths instead. Give distinct "
        "widths >= 0.2 px, e.g. through jaxdiffim.core.widths.widths_from_parameters."
    ),
}


def describe_status(status):
    """List the messages of the bits set in ``status``."""
    status = int(np.asarray(status))
    return [msg for bit, msg in _MESSAGES.items() if status & bit]


def raise_for_status(status):
    """Raise the exception for the fatal bits of ``status`` (NO_CANDIDATES, NONFINITE,
    DEGENERATE_BASIS).

    Raises
    ------
    NoKernelCandidatesError, SingularSystemError, KernelFitError
    InvalidInputError
        If ``status`` is traced (``check=True`` inside the user's ``jit``/``grad``/``vmap``).
    """
    if isinstance(status, jax.core.Tracer):
        raise InvalidInputError(
            "check=True needs concrete values, but this call is being traced (jit, grad or "
            "vmap): pass check=False and read solution.status (jaxdiffim.describe_status)."
        )
    status = int(np.asarray(status))
    if status & NO_CANDIDATES:
        raise NoKernelCandidatesError(_MESSAGES[NO_CANDIDATES])
    if status & NONFINITE:
        raise SingularSystemError(_MESSAGES[NONFINITE])
    if status & DEGENERATE_BASIS:
        raise KernelFitError(_MESSAGES[DEGENERATE_BASIS])
    if status & ~(SINGULAR | NOT_CONVERGED):
        raise KernelFitError(f"unknown fit status {status}.")
