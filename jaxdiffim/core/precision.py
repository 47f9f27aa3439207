"""float64 arithmetic for the least-squares fit without touching the user's global x64 flag.

The normal equations of an Alard-Lupton fit have condition numbers of 1e8 or more, beyond
float32 (see ``jax-style.md`` §3.4), and ip_diffim solves them in double precision. JAX
truncates explicit float64 requests to float32 unless ``jax_enable_x64`` is on, or (JAX >= 0.8)
``jax_explicit_x64_dtypes`` is ``"allow"``. The second flag is a scoped, thread-local
configuration state that is part of the jit cache key, so entering it only around our own jitted
calls gives float64 *inside* the fit while the user's arrays, outputs and global settings stay
as they were. It also works when our function is called inside the user's own ``jit`` or
``vmap``, because the dtype decisions are taken while tracing.

JAX transforms some programs after tracing them, outside any scope we entered: the backward pass
of ``jax.grad`` and ``vmap`` of a function the user already jitted. With x64 off those must run
inside :func:`fit_precision` (a public context manager); otherwise JAX truncates the fit to
float32 with a warning, or stops with a dtype error. Setting the flag globally at import would
avoid this but would change how the user's own explicit float64 requests behave, so we do not.
"""

import contextlib

import jax
import jax.numpy as jnp

from ..errors import PrecisionUnavailableError

__all__ = ["FIT_DTYPE", "fit_precision"]

#: dtype of the normal equations, their solution and the stamp design matrices.
FIT_DTYPE = jnp.float64

try:  # JAX >= 0.8: a scoped state; the name is private but stable since its introduction.
    from jax._src.config import explicit_x64_dtypes as _explicit_x64_dtypes
except ImportError:  # pragma: no cover - depends on the installed JAX
    _explicit_x64_dtypes = None


@contextlib.contextmanager
def fit_precision():
    """Context in which explicit float64 arrays are honoured.

    Raises
    ------
    PrecisionUnavailableError
        If x64 is off and this JAX has no ``jax_explicit_x64_dtypes`` state.
    """
    if jax.config.jax_enable_x64:
        yield
        return
    if _explicit_x64_dtypes is None:  # pragma: no cover - depends on the installed JAX
        raise PrecisionUnavailableError(
            "jaxdiffim solves its normal equations in float64. Either enable x64 "
            "(jax.config.update('jax_enable_x64', True)) or install jax>=0.8."
        )
    with _explicit_x64_dtypes("allow"):
        yield
