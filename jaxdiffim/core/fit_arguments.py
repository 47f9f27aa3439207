"""Host-side validation of a kernel fit's arguments and their defaults.

Runs before tracing (numpy on concrete arrays; traced values are passed through), so that bad
input raises a named :class:`jaxdiffim.errors.InvalidInputError` that says which argument is
wrong and what to change, instead of an error from inside XLA.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InvalidInputError
from .rejection import image_bbox
from .stamp_fit import DEFAULT_SIGMAS
from .stamps import Candidates

__all__ = ["check_images", "prepare_fit_arguments"]


def check_images(arrays, names):
    """Check that every array is a 2-D float32/float64 image of one shape; return the shape.

    Raises
    ------
    InvalidInputError
        Naming the first bad array (wrong rank, non-float or half-precision dtype, other shape).
    """
    shape = None
    for arr, name in zip(arrays, names, strict=True):
        if np.ndim(arr) != 2:
            raise InvalidInputError(f"{name} must be a 2-D image, got shape {np.shape(arr)}.")
        dtype = jnp.result_type(arr)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise InvalidInputError(f"{name} must be a floating-point image, got {dtype}.")
        if jnp.finfo(dtype).bits < 32:
            raise InvalidInputError(
                f"{name} is {dtype}: too coarse for a kernel fit; cast it to float32 "
                "(results come back in float32)."
            )
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
        shape = check_images(
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
    # stamp_inside on the host (numpy: no device program for a check)
    cx = np.round(np.asarray(candidates.x)).astype(np.int32)
    cy = np.round(np.asarray(candidates.y)).astype(np.int32)
    h = size // 2
    inside = (cx - h >= 0) & (cy - h >= 0) & (cx + h < shape[1]) & (cy + h < shape[0]) & valid
    if not inside.any():
        raise InvalidInputError(
            f"no candidate has its {size}x{size} stamp inside the image; candidates must lie at "
            f"least {size // 2} pixels from every edge."
        )
