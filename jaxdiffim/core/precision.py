"""float64 arithmetic for the least-squares fit without touching the user's global x64 flag.

The normal equations of an Alard-Lupton fit have condition numbers of 1e8 or more, beyond
float32 (see ``jax-style.md`` §3.4), and ip_diffim solves them in double precision. JAX
truncates explicit float64 requests to float32 unless ``jax_enable_x64`` is on, or (JAX >= 0.8)
``jax_explicit_x64_dtypes`` is ``"allow"``. The second flag is a scoped, thread-local
configuration state that is part of the jit cache key, so entering it only around our own jitted
calls gives float64 *inside* the fit while the user's arrays, outputs and global settings stay
as they were. It also works when our function is called inside the user's own ``jit`` or
``vmap``, because the dtype decisions are taken while tracing.

JAX also transforms programs after tracing them, outside any scope entered while tracing: the
backward pass of ``jax.grad``/``jax.vjp`` and the batching of a program the user already jitted
(``vmap(jit(f))``). :func:`float64_program` makes a float64 function safe for those: it is a
``jax.custom_vjp`` whose forward pass and backward pass (a recomputation of the forward pass
and its ``jax.vjp``) are each ``jax.custom_batching.custom_vmap`` functions, and every one of
those Python rules enters the scope itself. The user never needs a context manager: ``jit``,
``grad``, ``vjp``, ``vmap`` and their compositions work with x64 off. Forward mode
(``jax.jvp``, ``jax.jacfwd``) of a ``custom_vjp`` is not defined by JAX; inside
:func:`fit_precision` (or with x64 on) the function runs plain, so forward mode works there.
"""

import contextlib

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

from ..errors import PrecisionUnavailableError

__all__ = ["FIT_DTYPE", "fit_precision", "float64_active", "float64_program", "forward_mode_hint"]

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


@contextlib.contextmanager
def forward_mode_hint():
    """Turn JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp function" raised in
    this block into a :class:`PrecisionUnavailableError` that says what to do. (Where JAX raises
    it later, from the user's own ``jit``, its own message stands.)"""
    try:
        yield
    except TypeError as err:
        if "forward-mode" not in str(err):
            raise
        raise PrecisionUnavailableError(
            "forward-mode differentiation (jax.jvp, jax.jacfwd, jax.linearize) of jaxdiffim's "
            "float64 kernel fit needs float64 while JAX transforms it: call it inside "
            "`with jaxdiffim.fit_precision():` or enable x64. Reverse mode (jax.grad, "
            "jax.vjp), vmap and jit need neither."
        ) from None


def float64_active():
    """Whether explicit float64 requests are honoured here (x64 on, or inside the scope)."""
    if jax.config.jax_enable_x64:
        return True
    if _explicit_x64_dtypes is None:  # pragma: no cover - depends on the installed JAX
        return False
    value = _explicit_x64_dtypes.value
    return getattr(value, "name", str(value)).lower() == "allow"


def _scoped(fn):
    """``fn`` as a ``custom_vmap`` function whose call and batching rule both run in scope."""

    @custom_vmap
    def call(*args):
        with fit_precision():
            return fn(*args)

    @call.def_vmap
    def _rule(axis_size, in_batched, *args):
        axes = tuple(jax.tree.map(lambda b: 0 if b else None, batched) for batched in in_batched)
        # the batched function is itself scoped: a further (outer) vmap batches it in scope too
        out = _scoped(jax.vmap(fn, in_axes=axes, axis_size=axis_size))(*args)
        return out, jax.tree.map(lambda _: True, out)

    return call


def float64_program(fn):
    """Wrap a function that computes in float64 so that no caller needs :func:`fit_precision`.

    Parameters
    ----------
    fn : callable
        A function of arrays (pytrees of arrays; bind static arguments first, e.g. with
        ``functools.partial``) that casts to :data:`FIT_DTYPE` inside and returns results in
        its callers' dtypes.

    Returns
    -------
    callable
        Same signature. With x64 on or inside :func:`fit_precision`, ``fn`` itself (every
        transformation, forward mode included). Otherwise a ``custom_vjp`` of ``custom_vmap``
        functions that enter the scope themselves (see the module docstring): reverse mode
        recomputes the forward pass in the backward pass; forward mode is not available there.
    """
    forward = _scoped(fn)
    backward = _scoped(lambda args, cotangent: jax.vjp(fn, *args)[1](cotangent))

    @jax.custom_vjp
    def program(*args):
        return forward(*args)

    program.defvjp(lambda *args: (forward(*args), args), backward)

    def call(*args):
        if float64_active():
            return fn(*args)
        with forward_mode_hint():
            return program(*args)

    return call
