"""Real DECam data end to end, through the Task and through the CLI, in both directions.

``../shared/data/decam``: 256² i-band cut-outs of one field on two nights, on one pixel grid,
without variance planes or PSFs (variance from GAIN/RDNOISE/AVSKY, PSF from the stars). OBS04b
has 5.4 px seeing and OBS18b 4.2 px: subtracting OBS04b from OBS18b needs the science image
convolved ('auto' picks convolveScience), the reverse the template. The point source at about
(56, 180) brightens between the nights; single exposures also carry cosmic rays, which is why
this pair (whose strongest residual is the variable in both directions) was chosen.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from utils import decam_path

from jaxdiffim.cli.main import main
from jaxdiffim.cli.subtract import load_exposure
from jaxdiffim.core.convolve import dilate_mask
from jaxdiffim.core.masks import bits
from jaxdiffim.io import read_exposure
from jaxdiffim.tasks import AlardLuptonSubtractTask

VARIABLE = (56, 180)
BAD = bits(("EDGE", "NO_DATA", "BAD", "SAT", "SAT_TEMPLATE"))


@pytest.fixture(scope="module")
def night04():
    return load_exposure(decam_path("04b"))


@pytest.fixture(scope="module")
def night18():
    return load_exposure(decam_path("18b"))


def check_difference(diff, template, science, sign):
    """Noise vs variance plane on empty sky (within 10 %); the variable is the top residual."""
    z = diff.image.array / np.sqrt(diff.variance.array)
    good = (diff.mask.array & BAD) == 0
    bright = np.zeros(z.shape, bool)
    for exp in (template, science):
        snr = exp.image.array / np.sqrt(exp.variance.array)
        bright |= snr > 3.0
    near = np.asarray(dilate_mask(jnp.asarray(bright.astype(np.int32)), 13)) != 0
    sky = good & ~near
    assert sky.sum() > 10000
    assert np.std(z[sky]) == pytest.approx(1.0, abs=0.1)
    zz = np.where(good, np.abs(z), 0.0)
    iy, ix = np.unravel_index(np.argmax(zz), z.shape)
    assert np.hypot(ix - VARIABLE[0], iy - VARIABLE[1]) <= 3, (ix, iy, z[iy, ix])
    assert np.sign(z[iy, ix]) == sign and abs(z[iy, ix]) > 10


@pytest.mark.parametrize(
    "direction, mode",
    [(("04", "18"), "convolveScience"), (("18", "04"), "convolveTemplate")],
    ids=["science-convolved", "template-convolved"],
)
def test_task_on_decam(night04, night18, direction, mode):
    exps = {"04": night04, "18": night18}
    template, science = exps[direction[0]], exps[direction[1]]
    config = AlardLuptonSubtractTask.ConfigClass()
    config.mode = "auto"
    # a 256² cut-out has about ten usable stars: a constant kernel and background
    config.makeKernel.kernel.active.spatialKernelOrder = 0
    config.makeKernel.kernel.active.spatialBgOrder = 0
    task = AlardLuptonSubtractTask(config=config)
    out = task.run(template, science)
    assert out.mode == mode
    assert out.difference.wcs is science.wcs
    assert out.psfMatchingKernel.getKernelSum() == pytest.approx(1.0, abs=0.15)
    check_difference(out.difference, template, science, sign=1 if direction[1] == "18" else -1)


@pytest.mark.parametrize("option", [[], ["--mode", "auto"]], ids=["best", "auto"])
def test_cli_on_decam_both_directions(tmp_path, capsys, option):
    """The default mode (best) reports both held-out scores and, with too few stars to trust
    them, keeps ip_diffim's direction; auto is ip_diffim's rule."""
    for t, s, mode in (("04b", "18b", "convolveScience"), ("18b", "04b", "convolveTemplate")):
        out = tmp_path / f"diff_{s}.fits"
        summary = tmp_path / f"diff_{s}.json"
        argv = ["subtract", decam_path(t), decam_path(s), "-o", str(out), "--json", str(summary)]
        assert main(argv + option) == 0
        printed = json.loads(capsys.readouterr().out)
        data = json.loads(summary.read_text())
        assert printed == data
        if option:
            assert data["mode"] == mode and data["mode_scores"] == {}
        else:  # ten stars: too few to trust held-out scores, so ip_diffim's rule decides
            assert data["mode"] == mode
            assert data["mode_scores"] == {"convolveTemplate": None, "convolveScience": None}
        # a 256² cut-out with a handful of stars: the orders are lowered (a constant kernel)
        assert data["spatial_kernel_order"] == 0 and data["spatial_bg_order"] <= 1
        assert "kernel sources" in data["spatial_orders_lowered"]
        for key in ("kernel_sum", "background_parameters", "qa", "n_kernel_sources_used"):
            assert key in data
        assert data["n_kernel_sources_used"] >= 3
        assert set(data["timings_s"]) == {"read", "subtract", "write"}
        diff = read_exposure(out)
        science = read_exposure(decam_path(s))
        assert diff.getBBox() == science.getBBox()
        np.testing.assert_allclose(
            diff.wcs.pixel_to_world_values(100, 50), science.wcs.pixel_to_world_values(100, 50)
        )
        assert diff.metadata["EXPTIME"] == science.metadata["EXPTIME"]
        template = load_exposure(decam_path(t))
        check_difference(diff, template, load_exposure(decam_path(s)), sign=1 if s == "18b" else -1)
