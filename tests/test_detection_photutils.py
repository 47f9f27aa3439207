"""The built-in detector against photutils' DAOStarFinder on a simulated field with galaxies,
un-subtracted sky and saturated stars: its detections are point sources, and it finds most of
the isolated stars that photutils' star finder finds, at the same positions."""

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from photutils.background import Background2D, MedianBackground
from photutils.detection import DAOStarFinder

from jaxdiffim.algorithms.detection import detect_sources
from jaxdiffim.testing.scenes import simulate_scene

SIZE = 1024


def _nearest(x, y, tx, ty):
    d = np.hypot(np.asarray(x)[:, None] - tx[None], np.asarray(y)[:, None] - ty[None])
    return d.min(axis=1), d.argmin(axis=1)


@pytest.fixture(scope="module")
def field():
    scene = simulate_scene("moderate", 4, SIZE)
    s = scene.science
    image = np.asarray(s.image.array, float)
    psf = np.asarray(s.psf_callable()((SIZE - 1) / 2, (SIZE - 1) / 2))
    return scene, image, np.asarray(s.variance.array), np.asarray(s.mask.array), psf


def test_kernel_sources_are_stars_and_as_many_as_photutils_finds(field):
    scene, image, variance, mask, psf = field
    truth = scene.truth
    sx, sy, sflux = truth["stars"]
    gx, gy, _ = truth["galaxies"]
    tx, ty, _ = truth["transients"]
    found = detect_sources(image, variance, mask, psf, threshold=10.0)
    assert found.x.size >= 20

    # detections are point sources: stars or transients (science-only point sources; the
    # flux-ratio cut of the kernel-source step removes them later), and a few of the most
    # compact galaxies (de Vaucouleurs cores of r_e 1.5-2 px look like the PSF; as static
    # sources in both images they are fitted like stars): 9 of 98 here
    d_star, _ = _nearest(found.x, found.y, sx, sy)
    d_transient, _ = _nearest(found.x, found.y, tx, ty)
    point = (d_star < 1.5) | (d_transient < 1.5)
    assert point.mean() >= 0.85
    d_gal, _ = _nearest(found.x, found.y, gx, gy)
    assert np.all(point | (d_gal < 2.0))  # nothing else: no blends, noise or wings

    # photutils' star finder on the same image, with photutils' own sky (the image keeps its
    # sky gradient) and its roundness/sharpness cuts for point sources; its threshold is on
    # the filtered peak, so 5 sky σ there is about S/N 10-20 in total flux
    good = mask == 0
    sky = Background2D(image, 64, mask=~good, bkg_estimator=MedianBackground()).background
    _, _, std = sigma_clipped_stats((image - sky)[good], sigma=3.0)
    fwhm = float(truth["fwhm"][1])
    finder = DAOStarFinder(threshold=5.0 * std, fwhm=fwhm, exclude_border=True)
    table = finder(image - sky, mask=~good)
    assert table is not None and len(table) >= 50
    px, py = np.asarray(table["x_centroid"]), np.asarray(table["y_centroid"])

    # the isolated, unsaturated stars that photutils finds ...
    isolated_p = np.array(
        [
            np.sort(np.hypot(px - a, py - b))[1] > 4 * fwhm if px.size > 1 else True
            for a, b in zip(px, py, strict=True)
        ]
    )
    d_ps, si = _nearest(px, py, sx, sy)
    on_star = (d_ps < 1.5) & ~truth["saturated"][si] & isolated_p
    sat_or_masked = np.array(
        [mask[int(round(b)), int(round(a))] != 0 for a, b in zip(px, py, strict=True)]
    )
    on_star &= ~sat_or_masked
    assert on_star.sum() >= 15
    # ... our detector finds most of them (it also demands clean, unblended footprints)
    d_mine, _ = _nearest(px[on_star], py[on_star], found.x, found.y)
    assert np.mean(d_mine < 1.5) >= 0.7
    # and its positions agree with photutils' centroids
    assert np.median(d_mine[d_mine < 1.5]) < 0.3
