"""The ``best`` convolution mode: the direction whose kernel predicts held-out stars best.

ip_diffim's ``auto`` rule (:func:`jaxdiffim.algorithms.psf_shape.choose_convolution_mode`)
convolves whichever image has the smaller PSF. That ignores noise: a kernel fitted to match a
noisy image to a deep one is biased by the noise of the image it convolves (errors in the
regressors), and on the quality benchmark's scenes where the science image is the sharper but
the noisier one, convolving it left 67 false positives per Mpix where convolving the deep
template (a mild deconvolution) left 11. ``best`` (HOTPANTS' ``-c b`` in spirit) sets up both
directions, fits each on the kernel sources and scores it on held-out ones
(:func:`jaxdiffim.core.cross_validation.heldout_scores`). ip_diffim's choice stands unless the
other direction's median score is lower by :data:`MARGIN`; a direction that cannot be set up
(too few kernel sources for its kernel size) or has fewer than :data:`MIN_HELDOUT_SOURCES`
usable kernel sources (its score would be noise) cannot win.
"""

import logging

import jax.numpy as jnp
import numpy as np

from ..core.cross_validation import heldout_scores
from ..core.precision import fit_precision
from ..core.rejection import image_bbox
from ..core.stamps import make_candidates
from ..errors import JaxDiffimError
from .kernel_sources import kernel_setup, kernel_sources
from .psf_shape import choose_convolution_mode

__all__ = ["MODE_CHOICES", "best_mode"]

log = logging.getLogger(__name__)

#: The two directions ``best`` compares.
MODE_CHOICES = ("convolveTemplate", "convolveScience")
#: Fewer usable kernel sources than this make the held-out scores too noisy to trust.
MIN_HELDOUT_SOURCES = 20
#: At most this many kernel sources (spread over the list) are scored, whatever the image size.
MAX_HELDOUT_SOURCES = 256
#: ip_diffim's direction is kept unless the other one scores lower by this fraction.
MARGIN = 0.05


def _score(prep, sources, config, mode):
    t_fwhm, s_fwhm = prep.template_size.fwhm, prep.science_size.fwhm
    fwhms = (t_fwhm, s_fwhm) if mode == "convolveTemplate" else (s_fwhm, t_fwhm)
    sigmas, kcfg = kernel_setup(config, *fwhms)
    chosen = kernel_sources(sources, prep, kcfg.kernel_size, config)
    n = len(chosen["x"])
    keep = np.unique(np.linspace(0, n - 1, min(n, MAX_HELDOUT_SOURCES)).round().astype(int))
    x, y = np.asarray(chosen["x"])[keep], np.asarray(chosen["y"])[keep]
    rating = None if chosen["rating"] is None else np.asarray(chosen["rating"])[keep]
    convolved, matched = (
        (prep.template, prep.science)
        if mode == "convolveTemplate"
        else (prep.science, prep.template)
    )
    with fit_precision():
        scores = heldout_scores(
            convolved.image,
            matched.image,
            convolved.variance,
            matched.variance,
            make_candidates(x, y, rating),
            jnp.asarray(sigmas),
            jnp.asarray(image_bbox(np.shape(prep.science.image))),
            config=kcfg,
        )
    return scores, chosen  # on the device still: the other direction is set up meanwhile


def _median_score(scores):
    scores = np.asarray(scores, float)
    scores = scores[np.isfinite(scores)]
    return float(np.median(scores)) if scores.size >= MIN_HELDOUT_SOURCES else np.nan


def best_mode(prep, sources, config):
    """ip_diffim's direction, or the other one if it predicts held-out kernel stars better.

    Parameters
    ----------
    prep : Prepared
        From :func:`jaxdiffim.algorithms.prepare.prepare_inputs` (with the detector's maps when
        ``sources`` is None).
    sources : mapping of columns or None
    config : SubtractionConfig

    Returns
    -------
    mode : str
    scores : dict
        ``{mode: median held-out score}`` (NaN for a direction that could not be set up or
        has too few usable kernel sources).
    chosen : dict or None
        :func:`~jaxdiffim.algorithms.kernel_sources.kernel_sources` for ``mode`` (None if its
        set-up failed).
    """
    pending, selections = {}, {}
    for mode in MODE_CHOICES:
        try:
            pending[mode], selections[mode] = _score(prep, sources, config, mode)
        except JaxDiffimError as err:
            log.info("mode=best: %s cannot be set up (%s)", mode, err)
            pending[mode] = None
    scores = {m: np.nan if v is None else _median_score(v) for m, v in pending.items()}
    mode = choose_convolution_mode(prep.template_size, prep.science_size)
    other = MODE_CHOICES[1 - MODE_CHOICES.index(mode)]
    if np.isfinite(scores[other]) and not scores[other] * (1.0 + MARGIN) >= scores[mode]:
        mode = other
    log.info(
        "mode=best resolved to %s (held-out residual scores: %s)",
        mode,
        ", ".join(f"{m} {s:.3f}" for m, s in scores.items()),
    )
    return mode, scores, selections.get(mode)
