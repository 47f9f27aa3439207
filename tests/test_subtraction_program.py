"""The one subtraction program (core.pipeline.subtract_and_decorrelate) against its parts run
one by one: the fit and difference of subtract_images, the decorrelation step, and the QA
ratios of footprint_residual_ratio."""

import numpy as np
import pytest
from utils import basis_for, candidates_for, masked, scene_pair

from jaxdiffim import Decorrelation, subtract_and_decorrelate, subtract_images
from jaxdiffim.algorithms.decorrelate import decorrelate_difference
from jaxdiffim.algorithms.quality import footprint_residual_ratio, qa_table
from jaxdiffim.core.decorrelation import DECORRELATION_IGNORE_PLANES
from jaxdiffim.core.masks import FILL_BEFORE_FILTERING, bit, bits
from jaxdiffim.core.subtract import kernel_image


@pytest.mark.parametrize("mode", ["convolveTemplate", "convolveScience"])
def test_program_equals_its_steps(mode):
    sci, tmpl = scene_pair(2.4, 2.0, 1.0, 1.0)
    conv, ref = (tmpl, sci) if mode == "convolveTemplate" else (sci, tmpl)
    sigmas, config = basis_for(conv.psf_sigma, ref.psf_sigma)
    t_mi, s_mi = masked(tmpl, crop=20 if tmpl.border else 0), masked(sci)
    cands = candidates_for(sci)
    diff, sol = subtract_images(t_mi, s_mi, cands, config, sigmas, mode=mode)

    x, y = np.asarray(cands.x)[:20], np.asarray(cands.y)[:20]
    settings = Decorrelation(
        fill_bits=bits(FILL_BEFORE_FILTERING), ignore_bits=bits(DECORRELATION_IGNORE_PLANES)
    )
    out = subtract_and_decorrelate(
        t_mi,
        s_mi,
        cands,
        config,
        sigmas,
        mode=mode,
        subtract_background=False,
        decorrelation=settings,
        qa=(*qa_table(x, y), 6.0),
    )
    np.testing.assert_allclose(
        out.solution.kernel_coefficients, sol.kernel_coefficients, rtol=1e-5, atol=1e-7
    )

    # the decorrelation step on its own, from subtract_images' difference
    b = np.asarray(sol.bbox, float)
    kernel = kernel_image(sol, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, config)
    kappa = float(sol.kernel_sum)
    unconvolved, convolved = (s_mi, t_mi) if mode == "convolveTemplate" else (t_mi, s_mi)
    want = decorrelate_difference(
        diff.difference,
        kernel,
        unconvolved,
        convolved,
        scale=1.0 if mode == "convolveTemplate" else 1.0 / kappa**2,
    )
    scale = np.abs(np.asarray(want.image)).max()
    np.testing.assert_allclose(out.difference.image, want.image, atol=1e-4 * scale)
    np.testing.assert_allclose(out.difference.variance, want.variance, rtol=1e-4)
    assert not np.any(np.asarray(out.difference.mask) & bit("NO_DATA"))

    # the QA ratios, against the host-side metric on the program's own difference
    ratio = footprint_residual_ratio(
        out.difference.image, s_mi.image, out.difference.mask, x, y, 6.0
    )
    used = np.asarray(out.qa_used)
    # float32 sums in another order (the program sums each disc within a square bucketed to
    # 31 px): equal to 1e-5 of a typical ratio (0.01)
    np.testing.assert_allclose(np.asarray(out.qa_ratios)[used], ratio.ratios, rtol=1e-5, atol=1e-7)
    assert used.sum() == ratio.ratios.size == 20
    if mode == "convolveTemplate":  # the reference itself, not a copy out of the program
        assert out.matched_science is s_mi


def test_program_under_jit_with_a_traced_star_table():
    import jax

    sci, tmpl = scene_pair(2.4, 2.0, 1.0, 1.0)
    sigmas, config = basis_for(tmpl.psf_sigma, sci.psf_sigma)
    t_mi, s_mi = masked(tmpl, crop=20 if tmpl.border else 0), masked(sci)
    cands = candidates_for(sci)
    x, y, valid = qa_table(np.asarray(cands.x)[:10], np.asarray(cands.y)[:10])

    def ratios(xs, ys):
        out = subtract_and_decorrelate(
            t_mi,
            s_mi,
            cands,
            config,
            sigmas,
            mode="convolveTemplate",
            subtract_background=False,
            qa=(xs, ys, valid, 6.0),
            check=False,
        )
        return out.qa_ratios

    got = jax.jit(ratios)(x, y)
    want = ratios(x, y)
    np.testing.assert_allclose(got, want, rtol=1e-5)
