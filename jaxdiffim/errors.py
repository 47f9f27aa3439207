"""Exceptions raised by jaxdiffim.

Every error that reaches a user is one of these named classes, with a message that says what
to change. Inside ``jit`` the core cannot raise; it returns integer status codes instead
(:mod:`jaxdiffim.status`), which :func:`jaxdiffim.status.raise_for_status` turns into these
exceptions on the host.
"""

__all__ = [
    "JaxDiffimError",
    "InvalidInputError",
    "KernelFitError",
    "NoKernelCandidatesError",
    "SingularSystemError",
    "PrecisionUnavailableError",
]


class JaxDiffimError(Exception):
    """Base class of every exception raised by jaxdiffim."""


class InvalidInputError(JaxDiffimError, ValueError):
    """An argument has the wrong rank, shape, dtype or value (raised before tracing)."""


class KernelFitError(JaxDiffimError, RuntimeError):
    """The PSF-matching kernel could not be determined from the given candidates."""


class NoKernelCandidatesError(KernelFitError):
    """No usable kernel candidate is left (all padded, invalid, or rejected by clipping).

    Port of ``lsst.ip.diffim.NoKernelCandidatesError``.
    """


class SingularSystemError(KernelFitError):
    """The spatial normal equations are singular or gave a non-finite solution."""


class PrecisionUnavailableError(JaxDiffimError, RuntimeError):
    """float64 arithmetic is needed but this JAX cannot provide it."""
