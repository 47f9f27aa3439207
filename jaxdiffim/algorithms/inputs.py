"""Making the two input images ready: template coverage and ip_diffim's mask semantics.

Ports of ``checkTemplateIsSufficient`` and ``AlardLuptonSubtractTask.updateMasks``
(``subtractImages.py``; ip_diffim.md §1, §2.10). Pure functions of integer mask arrays; nothing
is modified in place.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ..core.masks import MASK_PLANES, PRESERVE_TEMPLATE, RENAME_TEMPLATE, bit, bits
from ..errors import InvalidInputError, NoWorkFound

__all__ = [
    "coverage_fraction",
    "mask_update",
    "require_coverage",
    "template_coverage",
    "update_masks",
]


def coverage_fraction(template_mask, science_mask):
    """Jittable :func:`template_coverage` (same-shape integer masks); float32 scalar."""
    nodata = ((template_mask | science_mask) & bit("NO_DATA")) != 0
    return 1.0 - jnp.mean(nodata.astype(jnp.float32))


def template_coverage(template_mask, science_mask):
    """Fraction of science pixels with data in both images.

    ``1 - #(NO_DATA in template OR NO_DATA in science) / area`` (ip_diffim's definition).

    Parameters
    ----------
    template_mask, science_mask : array_like of int, shape (H, W)
        The template already cut to the science grid.

    Returns
    -------
    float
    """
    t = np.asarray(template_mask)
    s = np.asarray(science_mask)
    if t.shape != s.shape:
        raise InvalidInputError(
            f"template mask {t.shape} and science mask {s.shape} must be on one pixel grid."
        )
    nodata = ((t | s) & bit("NO_DATA")) != 0
    return 1.0 - float(np.count_nonzero(nodata)) / nodata.size


def require_coverage(fraction, required_fraction, reason=""):
    """Raise :class:`NoWorkFound` if the coverage ``fraction`` is below ``required_fraction``."""
    fraction = float(fraction)
    if fraction < required_fraction:
        raise NoWorkFound(
            f"The template covers {100 * fraction:.1f}% of the science image, less than the "
            f"required {100 * required_fraction:.1f}%{': ' + reason if reason else ''}. "
            "Use a template that overlaps the science image, or lower required_template_fraction "
            "(0 always attempts the subtraction)."
        )
    return fraction


def mask_update(template_mask, science_mask, preserve=PRESERVE_TEMPLATE, rename=RENAME_TEMPLATE):
    """Jittable core of :func:`update_masks` (``preserve`` and ``rename`` static)."""
    t, s = template_mask, science_mask
    s = s & ~jnp.asarray(bits(("DETECTED", "DETECTED_NEGATIVE")), s.dtype)
    s = s | jnp.where((s & bit("FAKE")) != 0, bit("INJECTED"), 0).astype(s.dtype)
    copied = 0
    pairs = [(name, name + "_TEMPLATE") for name in rename if name + "_TEMPLATE" in MASK_PLANES]
    pairs.append(("FAKE", "INJECTED_TEMPLATE"))
    for source, target in pairs:
        copied |= bit(target)
        t = t | jnp.where((t & bit(source)) != 0, bit(target), 0).astype(t.dtype)
    return t & jnp.asarray(bits(preserve) | copied, t.dtype), s


_mask_update = jax.jit(mask_update, static_argnames=("preserve", "rename"))


def update_masks(
    template_mask,
    science_mask,
    preserve=PRESERVE_TEMPLATE,
    rename=RENAME_TEMPLATE,
):
    """ip_diffim's mask preparation before differencing.

    * science: clear ``DETECTED`` and ``DETECTED_NEGATIVE``; ``FAKE`` is copied to ``INJECTED``;
    * template: ``FAKE`` is copied to ``INJECTED_TEMPLATE``; every plane in ``rename`` is copied
      to ``<NAME>_TEMPLATE``; then every plane except ``preserve`` and the ``*_TEMPLATE`` planes
      is cleared.

    Parameters
    ----------
    template_mask, science_mask : array_like of int, shape (H, W)
    preserve, rename : sequence of str
        ``preserveTemplateMask`` and ``renameTemplateMask``.

    Returns
    -------
    template_mask, science_mask : numpy arrays (new arrays; the inputs are not modified)
    """
    t = np.asarray(template_mask)
    s = np.asarray(science_mask)
    new_t, new_s = _mask_update(t, s, tuple(preserve), tuple(rename))
    return np.array(new_t, t.dtype), np.array(new_s, s.dtype)
