"""Two plain FITS files whose sky has not been subtracted: the CLI's default removes it.

ip_diffim's inputs are sky-subtracted; images from elsewhere keep 800-1500 counts of sky, and
a gradient. With no options the difference must have zero mean and unit noise in units of its
variance plane, in both directions (one convolves the template, the other the science image),
and ``--no-subtract-background`` keeps the sky difference (ip_diffim's behaviour).
"""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std

from jaxdiffim.cli.main import main
from jaxdiffim.testing.synthetic import make_test_image

SIZE = 320


def sky_image(psf_sigma, noise_seed, level, slope_x, slope_y):
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    scene = make_test_image(
        psf_sigma=psf_sigma,
        noise_level=8.0,
        noise_seed=noise_seed,
        n_src=60,
        flux_level=2e4,
        size=(SIZE, SIZE),
    )
    return (scene.image + level + slope_x * xx + slope_y * yy).astype(np.float32)


@pytest.fixture(scope="module")
def sky_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sky")
    paths = {}
    for name, args in {
        "template": (2.0, 7, 800.0, 0.4, -0.2),
        "science": (2.6, 6, 1500.0, -0.3, 0.5),
    }.items():
        paths[name] = str(folder / f"{name}.fits")
        fits.PrimaryHDU(sky_image(*args)).writeto(paths[name])
    return folder, paths


def normalised(path):
    with fits.open(path) as hdul:
        image = hdul["IMAGE"].data.astype(float)
        mask = hdul["MASK"].data
        var = hdul["VARIANCE"].data.astype(float)
    good = (mask == 0) & np.isfinite(image) & (var > 0)
    return image[good] / np.sqrt(var[good])


@pytest.mark.parametrize("direction", ["template-first", "science-first"])
def test_sky_is_subtracted_by_default(sky_pair, direction, capsys):
    folder, paths = sky_pair
    pair = [paths["template"], paths["science"]]
    if direction == "science-first":
        pair.reverse()
    out = folder / f"diff-{direction}.fits"
    assert main(["subtract", *pair, "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    z = normalised(out)
    assert abs(np.median(z)) < 0.1
    assert mad_std(z) == pytest.approx(1.0, abs=0.1)
    expected = "convolveTemplate" if direction == "template-first" else "convolveScience"
    assert summary["mode"] == expected


def test_no_subtract_background_keeps_the_sky(tmp_path, capsys):
    """ip_diffim's behaviour: the sky difference stays (flat skies: the stamps' constant
    backgrounds cannot follow a gradient, which is why the file path subtracts the sky)."""
    paths = []
    for name, args in {"t": (2.0, 7, 800.0, 0.0, 0.0), "s": (2.6, 6, 1500.0, 0.0, 0.0)}.items():
        paths.append(str(tmp_path / f"{name}.fits"))
        fits.PrimaryHDU(sky_image(*args)).writeto(paths[-1])
    out = tmp_path / "kept.fits"
    argv = ["subtract", *paths, "-o", str(out), "--no-subtract-background"]
    assert main([*argv, "-c", "raiseOnBadSubtractionRatio=False"]) == 0
    capsys.readouterr()
    assert np.median(normalised(out)) > 5  # 700 counts of sky left, noise ~8
