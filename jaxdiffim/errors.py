"""Exceptions raised by jaxdiffim.

Every error that reaches a user is one of these named classes, with a message that says what
to change. Inside ``jit`` the core cannot raise; it returns integer status codes instead
(:mod:`jaxdiffim.core.status`), which :func:`jaxdiffim.core.status.raise_for_status` turns into
these
exceptions on the host.
"""

__all__ = [
    "JaxDiffimError",
    "InvalidInputError",
    "KernelFitError",
    "NoKernelCandidatesError",
    "SingularSystemError",
    "PrecisionUnavailableError",
    "NoWorkFound",
    "InsufficientKernelSourcesError",
    "BadSubtractionError",
    "VarianceScalingError",
    "InputFileError",
    "OutputExistsError",
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


class NoWorkFound(JaxDiffimError, RuntimeError):
    """There is nothing to subtract: the template covers too little of the science image.

    Port of ``lsst.pipe.base.NoWorkFound`` as raised by ip_diffim's ``checkTemplateIsSufficient``.
    """


class InsufficientKernelSourcesError(KernelFitError):
    """Fewer kernel sources survived selection than ``min_kernel_sources``.

    Port of ip_diffim's ``InsufficientKernelSourcesError`` (a ``RuntimeError``).
    """


class BadSubtractionError(JaxDiffimError, RuntimeError):
    """The difference image leaves too much of the science image's stars behind.

    Port of ip_diffim's ``BadSubtractionError`` (``detectAndMeasure.py``): raised when the mean
    or the scatter of the footprint residual ratio exceeds its threshold.
    """


class VarianceScalingError(JaxDiffimError, RuntimeError):
    """The variance plane is so far from the pixel noise that rescaling it is not credible.

    Raised by :func:`jaxdiffim.algorithms.scale_variance.scale_variance` when both of
    meas_algorithms'
    ``ScaleVarianceTask`` estimates exceed the limit.
    """


class InputFileError(JaxDiffimError, OSError):
    """An input file is missing, unreadable, or not in a format jaxdiffim understands."""


class OutputExistsError(JaxDiffimError, FileExistsError):
    """An output file exists already and overwriting was not asked for."""
