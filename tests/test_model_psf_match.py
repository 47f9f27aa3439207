"""ModelPsfMatchTask: ports of ip_diffim's test_modelPsfMatch, and the match itself.

ip_diffim's recipe (ip_diffim.md §3.4): a 256² exposure (2 cells) with a DoubleGaussianPsf(11,
11, 2.0), the reference DoubleGaussianPsf(11, 11, 3.7), kernelSize = kernelSizeMin = 9,
scaleByFwhm off. Beyond the port: stars in the matched image have the reference's FWHM within
2 %, for a double-Gaussian PSF and for a PSF that varies across the image.
"""

import numpy as np
import pytest

from jaxdiffim.algorithms.psf_shape import psf_fwhm
from jaxdiffim.core.masks import bit
from jaxdiffim.errors import InvalidInputError
from jaxdiffim.image import DoubleGaussianPsf, Exposure, GaussianPsf, GridImagePsf
from jaxdiffim.tasks import ModelPsfMatchTask


def exposure(psf=None, size=256, image=None):
    img = np.zeros((size, size)) if image is None else image
    return Exposure(
        img,
        variance=np.ones((size, size)),
        psf=DoubleGaussianPsf(11, 11, 2.0) if psf is None else psf,
        band="i",
        photoCalib=2.5,
        xy0=(500, 700),
    )


def config(kernel_size=9, order=0, **kw):
    cfg = ModelPsfMatchTask.ConfigClass()
    cfg.kernel.active.kernelSize = kernel_size
    cfg.kernel.active.kernelSizeMin = kernel_size
    cfg.kernel.active.scaleByFwhm = False
    cfg.kernel.active.spatialKernelOrder = order
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("kernel_sum", [0.5, 1.0, 2.7])
def test_match_kernel_sum(order, kernel_sum):
    task = ModelPsfMatchTask(config=config(order=order))
    out = task.run(exposure(), DoubleGaussianPsf(11, 11, 3.7), kernelSum=kernel_sum)
    for x, y in ((500, 700), (640, 830), (755, 955)):
        ksum = out.psfMatchingKernel.computeImage(x, y, doNormalize=False).sum()
        assert ksum == pytest.approx(kernel_sum, abs=5e-8)  # assertAlmostEqual, 7 places
    cells = out.kernelCellSet
    assert len(cells) == 16 and cells.used.all()  # 4 x 4 cells over the bbox grown by a cell
    assert cells.getBBox().getBegin() == (500 - 128, 700 - 128)
    assert out.psfMatchingKernel.isSpatiallyVarying() == (order > 0)


def test_too_big():
    task = ModelPsfMatchTask(config=config(kernel_size=11, doAutoPadPsf=False))
    with pytest.raises(ValueError, match="too big"):
        task.run(exposure(), DoubleGaussianPsf(11, 11, 3.7))


def test_pad_psf():
    ref = DoubleGaussianPsf(11, 11, 3.7)
    out = ModelPsfMatchTask(config=config()).run(exposure(), ref)
    assert out.kernelCellSet.psf_size == 13  # nextOddInteger(9 * 1.4)
    for pad in (0, 2, 4):
        task = ModelPsfMatchTask(config=config(doAutoPadPsf=False, padPsfBy=pad))
        assert task.run(exposure(), ref).kernelCellSet.psf_size == 11 + pad
    for pad in (1, 3, 5):
        task = ModelPsfMatchTask(config=config(doAutoPadPsf=False, padPsfBy=pad))
        with pytest.raises(ValueError, match="even"):
            task.run(exposure(), ref)


def test_adjust_model_size_and_propagation():
    exp = exposure()
    out = ModelPsfMatchTask(config=config()).run(exp, DoubleGaussianPsf(13, 13, 3.7))
    ref = out.referencePsfModel
    assert ref.getDimensions() == (11, 11)
    assert ref.getSigma1() == 3.7
    matched = out.psfMatchedExposure
    assert matched.getBBox() == exp.getBBox()
    assert (matched.band, matched.photoCalib, matched.wcs) == ("i", 2.5, exp.wcs)
    assert matched.psf is ref


def test_no_psf_is_a_runtime_error():
    exp = exposure()
    exp.setPsf(None)
    with pytest.raises(RuntimeError, match="Psf model"):
        ModelPsfMatchTask(config=config()).run(exp, DoubleGaussianPsf(11, 11, 3.7))


def test_variance_and_mask_propagation():
    image = np.zeros((256, 256))
    image[100, 120] = np.nan
    exp = exposure(image=image)
    exp.mask.array[50, 60] = bit("BAD")
    out = ModelPsfMatchTask(config=config()).run(exp, DoubleGaussianPsf(11, 11, 3.7))
    m = out.psfMatchedExposure
    k = out.psfMatchingKernel.computeImage(628, 828, doNormalize=True)
    # unit input variance: K² ⊛ 1 = Σ K² (kernel normalised) away from the border
    assert m.variance.array[128, 128] == pytest.approx((k**2).sum(), rel=1e-3)
    assert m.mask.array[50, 60] & bit("BAD") and m.mask.array[54, 64] & bit("BAD")  # smeared
    assert m.mask.array[100, 120] & bit("NO_DATA")
    assert np.isfinite(m.image.array).all()
    assert exp.mask.array[54, 64] == 0  # the input is not modified


def _stars(psf, size=256):
    """Unit-flux-scaled stars on a grid 48 px apart (isolated), and their positions."""
    rng = np.random.default_rng(1)
    img = np.zeros((size, size))
    g = np.arange(32, size - 20, 48)
    xs, ys = (a.ravel() + rng.uniform(-0.5, 0.5, a.size) for a in np.meshgrid(g, g))
    for x, y in zip(xs, ys, strict=True):
        stamp = psf.computeImage(x, y)
        (x0, y0), (h, w) = stamp.xy0, stamp.array.shape
        img[y0 : y0 + h, x0 : x0 + w] += 1000.0 * stamp.array
    return img, xs, ys


def _fwhms(img, xs, ys, half=15):
    return np.array(
        [
            psf_fwhm(
                img[round(y) - half : round(y) + half + 1, round(x) - half : round(x) + half + 1]
            )
            for x, y in zip(xs, ys, strict=True)
        ]
    )


def test_double_gaussian_stars_get_the_reference_fwhm():
    psf = DoubleGaussianPsf(31, 31, 2.0, 4.0, 0.1)
    img, xs, ys = _stars(psf)
    exp = Exposure(img, variance=np.ones_like(img), psf=psf)
    ref = DoubleGaussianPsf(31, 31, 3.7)
    out = ModelPsfMatchTask(config=config(kernel_size=11)).run(exp, ref)
    fwhm = _fwhms(out.psfMatchedExposure.image.array, xs, ys)
    assert psf_fwhm(img[17:48, 17:48]) < 0.65 * ref.computeFwhm()  # a real change of width
    np.testing.assert_allclose(fwhm, ref.computeFwhm(), rtol=0.02)


def test_varying_psf_stars_get_the_reference_fwhm():
    """The exposure's PSF widens from sigma 2.0 to 2.4 across x (a grid of PSF images)."""
    nodes = [0.0, 128.0, 255.0]
    stamps = np.array([[GaussianPsf(41, 41, s).computeKernelImage() for s in (2.0, 2.2, 2.4)]] * 3)
    psf = GridImagePsf(stamps, nodes, nodes)
    img, xs, ys = _stars(psf)
    exp = Exposure(img, variance=np.ones_like(img), psf=psf)
    ref = DoubleGaussianPsf(41, 41, 3.7)
    out = ModelPsfMatchTask(config=config(kernel_size=15, order=1)).run(exp, ref)
    fwhm = _fwhms(out.psfMatchedExposure.image.array, xs, ys)
    before = _fwhms(img, xs, ys)
    assert before.max() / before.min() > 1.12  # 4.8 to 5.5 px across the stars
    np.testing.assert_allclose(fwhm, ref.computeFwhm(), rtol=0.02)


def test_odd_pad_message_names_the_field():
    task = ModelPsfMatchTask(config=config(doAutoPadPsf=False, padPsfBy=3))
    with pytest.raises(InvalidInputError, match="padPsfBy"):
        task.run(exposure(), DoubleGaussianPsf(11, 11, 3.7))
