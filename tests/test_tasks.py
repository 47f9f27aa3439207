"""The Task layer: ip_diffim's config names, Task base behaviour, and run() on exposures.

The exposures carry ip_diffim's test origin (x0, y0) = (12345, 67890), so every position that
crosses the facade is checked in parent coordinates against the core's array coordinates.
"""

import logging

import numpy as np
import pytest
from astropy.table import Table

from jaxdiffim import alard_lupton_subtract, kernel_image
from jaxdiffim.core.masks import bit
from jaxdiffim.errors import InvalidInputError
from jaxdiffim.image import Exposure, FilteredPsf, GaussianPsf
from jaxdiffim.tasks import (
    AlardLuptonPreconvolveSubtractTask,
    AlardLuptonSubtractConfig,
    AlardLuptonSubtractTask,
    DecorrelateALKernelTask,
    FieldValidationError,
    PsfMatchConfigAL,
    Struct,
)
from jaxdiffim.tasks.subtract import core_config
from jaxdiffim.testing.synthetic import make_test_image

X0, Y0 = 12345, 67890


def exposure(scene, crop=0):
    sl = np.s_[crop : scene.image.shape[0] - crop, crop : scene.image.shape[1] - crop]
    det = np.zeros(scene.image.shape, np.int32)
    return Exposure(
        scene.image[sl],
        det[sl],
        scene.variance[sl],
        psf=GaussianPsf(31, 31, scene.psf_sigma),
        band="g",
        xy0=(X0 + crop - scene.border, Y0 + crop - scene.border),
    )


def catalogue(scene):
    return Table(
        {
            "slot_Centroid_x": scene.x - scene.border + X0,
            "slot_Centroid_y": scene.y - scene.border + Y0,
            "slot_PsfFlux_instFlux": scene.flux,
            "slot_PsfFlux_instFluxErr": np.full(scene.x.size, 20.0),
        }
    )


@pytest.fixture(scope="module")
def pair():
    sci = make_test_image(psf_sigma=2.4, noise_level=1.0, noise_seed=6)
    tmpl = make_test_image(psf_sigma=2.0, noise_level=1.0, noise_seed=7, template_border=20)
    return sci, tmpl


def config(**kw):
    cfg = AlardLuptonSubtractConfig()
    cfg.restrictKernelEdgeSources = False
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


# ---------------------------------------------------------------------------------- configs


def test_config_names_defaults_and_validation():
    cfg = AlardLuptonSubtractConfig()
    assert cfg.mode == "convolveTemplate"
    assert cfg.doDecorrelation and cfg.doScaleVariance and not cfg.doSubtractBackground
    assert cfg.requiredTemplateFraction == 0.1
    active = cfg.makeKernel.kernel.active
    assert cfg.makeKernel.kernel.name == "AL"
    assert (active.spatialKernelOrder, active.spatialBgOrder, active.fitForBackground) == (
        1,
        2,
        True,
    )
    assert PsfMatchConfigAL().spatialKernelOrder == 2  # PsfMatchConfig's own default
    assert (active.kernelSize, active.alardNGauss, active.alardSigGauss) == (21, 3, [0.7, 1.5, 3.0])
    assert (active.sizeCellX, active.sizeCellY, active.nStarPerCell) == (128, 128, 5)
    with pytest.raises(FieldValidationError, match="'auto', 'best', 'convolveTemplate'"):
        cfg.mode = "aotu"
    with pytest.raises(FieldValidationError, match="'AL', 'DF'"):
        cfg.makeKernel.kernel.name = "XX"
    with pytest.raises(FieldValidationError, match="kernelSize"):
        active.kernelSize = 20
    with pytest.raises(FieldValidationError, match="int"):
        active.spatialKernelOrder = "1"
    with pytest.raises(AttributeError, match="doDecorelation"):
        cfg.doDecorelation = False
    cfg.makeKernel.kernel.name = "DF"
    assert core_config(cfg).kernel.kernel_basis == "delta-function"
    cfg.makeKernel.kernel.name = "AL"
    cfg.makeKernel.kernel.active.alardNGauss = 2
    with pytest.raises(FieldValidationError, match="alardNGauss"):
        AlardLuptonSubtractTask(config=cfg)


def test_config_maps_to_core():
    cfg = config(mode="auto", doDecorrelation=False)
    cfg.makeKernel.kernel.active.spatialKernelOrder = 0
    cfg.decorrelate.completeVarPlanePropagation = True
    core = core_config(cfg)
    assert core.mode == "auto" and not core.do_decorrelation
    assert core.kernel.spatial_kernel_order == 0 and core.complete_var_plane_propagation
    assert not core.restrict_kernel_edge_sources


# ---------------------------------------------------------------------------------- Task base


def test_task_base_behaviour(caplog):
    task = AlardLuptonSubtractTask()
    assert task.getName() == "alardLuptonSubtract"
    assert task.makeKernel.getFullName() == "alardLuptonSubtract.makeKernel"
    assert set(task.getTaskDict()) == {
        "alardLuptonSubtract",
        "alardLuptonSubtract.makeKernel",
        "alardLuptonSubtract.decorrelate",
    }
    assert set(task.getFullMetadata()) == set(task.getTaskDict())
    with caplog.at_level(logging.DEBUG, logger="jaxdiffim"):
        with task.timer("work"):
            pass
    assert task.metadata["workDuration"] >= 0 and "workCpuTime" in task.metadata
    assert "work took" in caplog.text
    task.emptyMetadata()
    assert "workDuration" not in task.metadata
    with pytest.raises(NotImplementedError, match=r"run\("):
        task.runQuantum(None, None, None)
    assert task.getSchemaCatalogs() == {} and task.getAllSchemaCatalogs() == {}
    assert task.getResourceConfig() is None and task.canMultiprocess
    assert task.log.name == "jaxdiffim.alardLuptonSubtract"
    with pytest.raises(FieldValidationError, match="frozen"):
        task.config.mode = "auto"
    field = DecorrelateALKernelTask.makeField("doc")
    assert field.target is DecorrelateALKernelTask
    s = Struct(a=1, b=2)
    assert s.getDict() == {"a": 1, "b": 2} and len(s) == 2


# ---------------------------------------------------------------------------------- run


def test_run_matches_core_in_parent_coordinates(pair):
    sci_scene, tmpl_scene = pair
    sci, tmpl = exposure(sci_scene), exposure(tmpl_scene)
    task = AlardLuptonSubtractTask(config=config())
    out = task.run(tmpl, sci, catalogue(sci_scene))
    assert out.difference.getBBox() == sci.getBBox()
    assert out.matchedTemplate.psf is sci.psf and out.difference.band == "g"
    # the difference's own PSF: the science PSF through the decorrelation filter
    assert isinstance(out.difference.psf, FilteredPsf) and out.difference.psf.base is sci.psf
    # the same through the core, on arrays
    cols = {
        "x": sci_scene.x,
        "y": sci_scene.y,
        "flux": sci_scene.flux,
        "flux_err": np.full(sci_scene.x.size, 20.0),
    }
    core = alard_lupton_subtract(
        tmpl[sci.getBBox()].maskedImage,
        sci.maskedImage,
        GaussianPsf(31, 31, 2.0).computeKernelImage(),
        GaussianPsf(31, 31, 2.4).computeKernelImage(),
        cols,
        core_config(task.config),
    )
    np.testing.assert_array_equal(out.difference.image.array, np.asarray(core.difference.image))
    np.testing.assert_array_equal(
        out.matchedTemplate.image.array, np.asarray(core.matched_template.image)
    )
    # kernel and background evaluated at parent positions
    k = out.psfMatchingKernel.computeImage(X0 + 40.0, Y0 + 200.0)
    ref = np.asarray(kernel_image(core.solution, 40.0, 200.0, core.kernel_config))
    # the Task evaluates in float64, the core's kernel_image in the solution's float32
    np.testing.assert_allclose(k, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    bg = out.backgroundModel.computeImage()
    assert out.backgroundModel(X0 + 30, Y0 + 70) == pytest.approx(
        float(bg[70, 30]), rel=1e-4, abs=1e-6
    )
    assert out.backgroundModel.getNParameters() == 6
    ks = out.kernelSources
    np.testing.assert_allclose(ks["x"], cols["x"][ks["index"]] + X0)
    assert task.metadata["convolvedExposure"] == "Template"
    assert task.metadata["differenceFootprintRatioMean"] < 0.02
    assert "runDuration" in task.metadata and "fit_subtract_decorrelateDuration" in task.metadata
    _, _, grid = out.psfMatchingKernel.computeImageGrid(2, 2)
    assert grid.shape == (2, 2, 21, 21)


def test_convolve_science_background_sign(pair):
    sci_scene, tmpl_scene = pair
    sci, tmpl = exposure(sci_scene), exposure(tmpl_scene)
    cfg = config()
    cfg.makeKernel.kernel.active.spatialKernelOrder = 0
    task = AlardLuptonSubtractTask(config=cfg)
    out = task.runConvolveScience(tmpl, sci, catalogue(sci_scene))
    assert out.mode == "convolveScience"
    assert out.matchedScience.psf is tmpl.psf
    assert isinstance(out.difference.psf, FilteredPsf) and out.difference.psf.base is sci.psf
    kappa = out.psfMatchingKernel.getKernelSum()
    raw = np.asarray(out.psfMatchingKernel.solution.background_coefficients)
    np.testing.assert_allclose(out.backgroundModel.getParameters(), -raw / kappa, rtol=1e-6)


def test_preconvolve_task_returns_score(pair):
    sci_scene, tmpl_scene = pair
    task = AlardLuptonPreconvolveSubtractTask(config=config())
    out = task.run(exposure(tmpl_scene), exposure(sci_scene), catalogue(sci_scene))
    assert hasattr(out, "scoreExposure") and not hasattr(out, "difference")
    assert np.isfinite(out.scoreExposure.image.array).all()


def test_bad_exposures_raise_clear_errors(pair):
    sci_scene, tmpl_scene = pair
    sci, tmpl = exposure(sci_scene), exposure(tmpl_scene)
    task = AlardLuptonSubtractTask(config=config())
    with pytest.raises(InvalidInputError, match="does not contain"):
        task.run(tmpl[sci.getBBox().dilatedBy(-30)], sci, catalogue(sci_scene))
    nopsf = exposure(sci_scene)
    nopsf.setPsf(None)
    with pytest.raises(InvalidInputError, match="no PSF"):
        task.run(tmpl, nopsf, catalogue(sci_scene))
    other = exposure(tmpl_scene)
    other.band = "r"
    with pytest.raises(InvalidInputError, match="band"):
        task.run(other, sci, catalogue(sci_scene))
    with pytest.raises(InvalidInputError, match="Exposure"):
        task.run(tmpl.image.array, sci, catalogue(sci_scene))


def test_finalize_decorrelates_like_the_core(pair):
    """finalize() on an undecorrelated difference reproduces run()'s decorrelated one."""
    sci_scene, tmpl_scene = pair
    sci, tmpl = exposure(sci_scene), exposure(tmpl_scene)
    plain = AlardLuptonSubtractTask(
        config=config(doDecorrelation=False, doScaleVariance=False)
    ).run(tmpl, sci, catalogue(sci_scene))
    full = AlardLuptonSubtractTask(config=config(doScaleVariance=False)).run(
        tmpl, sci, catalogue(sci_scene)
    )
    task = AlardLuptonSubtractTask(config=config())
    corrected = task.finalize(tmpl, sci, plain.difference, plain.psfMatchingKernel)
    good = (full.difference.mask.array & (bit("EDGE") | bit("NO_DATA"))) == 0
    ref = full.difference.image.array
    assert not np.allclose(plain.difference.image.array[good], ref[good], atol=1e-3)
    np.testing.assert_allclose(corrected.image.array[good], ref[good], atol=1e-4)
    np.testing.assert_allclose(
        corrected.variance.array[good], full.difference.variance.array[good], rtol=1e-4
    )
    off = AlardLuptonSubtractTask(config=config(doDecorrelation=False))
    assert off.finalize(tmpl, sci, plain.difference, plain.psfMatchingKernel) is plain.difference
