"""Kernel-source selection and the built-in detector (jaxdiffim.algorithms.sources).

The selector tests port ip_diffim's ``test_kernel_source_selector`` and ``test_few_sources``
(ip_diffim.md §3.2) and check each cut at its boundary. The detector tests plant Gaussian stars
with known positions and fluxes on a noisy, sloped sky and compare against the truth.
"""

import numpy as np
import pytest

from jaxdiffim.algorithms.detection import detect_sources
from jaxdiffim.algorithms.sources import (
    SELECTION_CUTS,
    select_kernel_sources,
)
from jaxdiffim.core.masks import KERNEL_SOURCE_EXCLUDE, bit
from jaxdiffim.errors import InsufficientKernelSourcesError, InvalidInputError
from jaxdiffim.testing.synthetic import gaussian_stamp, make_test_image, plant_stars

KERNEL = 21

# ------------------------------------------------------------------------------ selection


def _select(x, y, shape=(256, 256), mask=None, **kw):
    kw.setdefault("kernel_size", KERNEL)
    return select_kernel_sources(x, y, shape=shape, mask=mask, **kw)


@pytest.mark.parametrize("which", ["all", "third", "unlimited"])
def test_kernel_source_selector(which):
    """ip_diffim test_kernel_source_selector: flagged and edge sources out, top S/N kept."""
    scene = make_test_image(n_src=20)
    x, y = scene.x, scene.y
    n = x.size
    snr = scene.flux / 20.0  # fluxErr = 20
    size = 256
    edge = 2 * KERNEL
    ix, iy = np.rint(x), np.rint(y)
    near_edge = (ix < edge) | (iy < edge) | (ix > size - 1 - edge) | (iy > size - 1 - edge)
    flags = (np.arange(n) % 3 == 0) | near_edge
    good = ~flags
    n_good = int(good.sum())
    assert 3 <= n_good < n
    max_sources = {"all": 1000, "third": n // 3, "unlimited": -1}[which]
    mask = np.zeros((size, size), np.int32)

    # The catalogue's own isolation is not at stake here: isolation_radius=0 disables it.
    sel = _select(
        x, y, mask=mask, snr=snr, flags=flags, isolation_radius=0, max_sources=max_sources
    )
    expected = n_good if max_sources <= 0 else min(n_good, max_sources)
    assert sel.indices.size == expected
    assert np.all(np.diff(sel.indices) > 0)
    assert list(sel.counts) == list(SELECTION_CUTS)
    assert sel.counts["flags"] == n - n_good
    assert sel.counts["edge"] == 0 and sel.counts["mask"] == 0
    assert sum(sel.counts.values()) == n - expected
    np.testing.assert_array_equal(
        np.sort(snr[sel.indices])[::-1], np.sort(snr[good])[::-1][:expected]
    )

    with pytest.raises(InsufficientKernelSourcesError) as info:
        _select(x, y, mask=mask, snr=snr, flags=flags, isolation_radius=0, min_sources=1000)
    assert isinstance(info.value, RuntimeError)  # ip_diffim's test expects a RuntimeError


def test_few_sources():
    """ip_diffim test_few_sources: 10 sources with only one passed in."""
    rng = np.random.default_rng(0)
    x = rng.uniform(60, 190, 10)
    y = rng.uniform(60, 190, 10)
    flags = np.ones(10, bool)
    flags[4] = False
    with pytest.raises(InsufficientKernelSourcesError) as info:
        _select(x, y, snr=np.full(10, 50.0), flags=flags, isolation_radius=0)
    message = str(info.value)
    assert "Only 1 of the 10" in message
    assert "flags=9" in message and "min_sources=3" in message
    assert "min_kernel_sources" in message


def test_mask_cut_uses_template_or_science_footprint():
    k = 11
    shape = (200, 200)
    x = np.array([50.0, 100.0, 150.0, 50.0])
    y = np.array([50.0, 100.0, 150.0, 150.0])
    science = np.zeros(shape, np.int32)
    template = np.zeros(shape, np.int32)
    science[50 + k, 50 + k] |= bit("SAT")  # footprint corner of source 0 -> out
    template[100 + k + 1, 100] |= bit("SAT")  # just outside source 1's footprint -> kept
    science[150 - k : 150 + k + 1, 150 - k : 150 + k + 1] |= bit("DETECTED")  # harmless
    template[150, 50 - k] |= bit("NO_DATA")  # footprint edge of source 3 -> out
    sel = _select(
        x,
        y,
        shape=shape,
        mask=science | template,
        kernel_size=k,
        isolation_radius=0,
        min_sources=0,
    )
    np.testing.assert_array_equal(sel.indices, [1, 2])
    assert sel.counts["mask"] == 2
    everything = _select(
        x,
        y,
        shape=shape,
        mask=science | template,
        kernel_size=k,
        isolation_radius=0,
        exclude_planes=(),
    )
    np.testing.assert_array_equal(everything.indices, [0, 1, 2, 3])
    assert set(KERNEL_SOURCE_EXCLUDE) >= {"SAT", "NO_DATA", "BAD", "EDGE"}


def test_edge_cut_boundaries():
    k = 11
    shape = (200, 200)
    x = np.array([22.0, 21.6, 21.4, 177.0, 177.4, 177.6])  # rint: 22 22 21 177 177 178
    y = np.full(x.size, 100.0)
    common = dict(shape=shape, mask=None, kernel_size=k, isolation_radius=0, min_sources=0)
    # restrict_edge: footprint (rint +- k) inside [k, 199 - k], i.e. rint in [2k, 199 - 2k].
    np.testing.assert_array_equal(_select(x, y, **common).indices, [0, 1, 3, 4])
    sel = _select(x, y, restrict_edge=False, **common)
    np.testing.assert_array_equal(sel.indices, np.arange(6))
    sel = _select(x - 11, y, restrict_edge=False, **common)  # rint in [k, 199 - k]
    np.testing.assert_array_equal(sel.indices, [0, 1, 3, 4, 5])
    sel = _select(x + 5, y, extra_edge=5, **common)  # rint in [2k + 5, 199 - 2k - 5]
    np.testing.assert_array_equal(sel.indices, [0, 1])
    assert sel.counts["edge"] == 4


def test_snr_window_is_inclusive():
    x = np.arange(6) * 30.0 + 50.0
    y = np.full(6, 100.0)
    snr = np.array([10.0, 500.0, 9.999, 500.001, np.nan, 100.0])
    sel = _select(x, y, snr=snr, isolation_radius=0, min_sources=0)
    np.testing.assert_array_equal(sel.indices, [0, 1, 5])
    assert sel.counts["signal_to_noise"] == 3
    sel = _select(x, y, snr=snr, isolation_radius=0, min_snr=None, max_snr=None, min_sources=0)
    np.testing.assert_array_equal(sel.indices, [0, 1, 2, 3, 5])


def test_isolation():
    x = np.array([60.0, 70.0, 150.0, 155.0, 100.0, 104.0])
    y = np.array([60.0, 60.0, 150.0, 150.0, 200.0, 200.0])
    snr = np.array([50.0, 50.0, 200.0, 1.9, 200.0, 2.1])  # 1.9 < 200 / 100 < 2.1
    common = dict(snr=snr, min_snr=None, max_snr=None, min_sources=0, max_sources=0)
    sel = _select(x, y, **common)  # radius = kernel size = 21
    np.testing.assert_array_equal(sel.indices, [2])  # the bright one with a 100x fainter pal
    assert sel.counts["isolation"] == 5
    np.testing.assert_array_equal(_select(x, y, isolation_radius=5, **common).indices, [0, 1, 2])
    # Without S/N every neighbour counts.
    sel = _select(x, y, min_sources=0, isolation_radius=5)
    np.testing.assert_array_equal(sel.indices, [0, 1])
    # A catalogue's own isolation flags replace the geometric test.
    isolated = np.array([True, False, True, True, False, True])
    sel = _select(x, y, isolated=isolated, **common)
    np.testing.assert_array_equal(sel.indices, [0, 2, 3, 5])


def test_max_sources_without_snr_keeps_first_rows():
    x = np.arange(8) * 20.0 + 50.0
    y = np.full(8, 120.0)
    sel = _select(x, y, isolation_radius=0, max_sources=5)
    np.testing.assert_array_equal(sel.indices, np.arange(5))
    assert sel.counts["max_sources"] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(y=np.ones(3)), "entries"),
        (dict(x=np.array([1.0, np.nan, 3.0, 4.0])), "not finite"),
        (dict(kernel_size=20), "odd"),
        (dict(kernel_size=1), "odd"),
        (dict(kernel_size=21.0), "odd"),
        (dict(mask=np.zeros((10, 10), np.int32)), "shape"),
        (dict(mask=np.zeros((256, 256))), "integer"),
        (dict(flags=np.zeros(4)), "boolean"),
        (dict(snr=np.ones(5)), "entries"),
        (dict(exclude_planes=("NOPE",)), "Unknown mask plane"),
        (dict(isolation_radius=-1.0), "isolation_radius"),
        (dict(shape=(256,)), "shape"),
    ],
)
def test_selection_bad_input(kwargs, match):
    args = dict(x=np.full(4, 100.0), y=np.arange(4) * 30.0 + 60.0, shape=(256, 256), mask=None)
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    args.setdefault("kernel_size", KERNEL)
    with pytest.raises(InvalidInputError, match=match):
        select_kernel_sources(x, y, **args)


# ------------------------------------------------------------------------------ detection

SIZE = 256
SIGMA = 2.0
NOISE = 5.0
PSF = gaussian_stamp(17, SIGMA)
FLUX_ERR_SKY = NOISE / np.sqrt(np.sum(PSF**2))  # matched-filter flux error on the bare sky
SATURATED = (60.0, 200.0)
BLEND = ((200.0, 60.0), (202.8, 62.9))  # 4.0 px apart
PAIR = ((60.0, 60.0), (68.0, 60.0))  # 8 px apart: two peaks, but within 2 FWHM
BAD_COLUMN = 180


def _sky(xx, yy):
    return 100.0 + 0.15 * xx - 0.1 * yy + 2e-4 * (xx - 128.0) ** 2


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(20240611)
    reserved = [SATURATED, *BLEND, *PAIR]
    points = []
    while len(points) < 30:
        p = rng.uniform(20, SIZE - 20, 2)
        if all(np.hypot(*(p - np.asarray(q))) > 24 for q in reserved + points):
            points.append(tuple(p))
    x, y = np.array(points).T
    snr = rng.uniform(20, 200, x.size)
    flux = snr * FLUX_ERR_SKY
    extra_x = [SATURATED[0], BLEND[0][0], BLEND[1][0], PAIR[0][0], PAIR[1][0]]
    extra_y = [SATURATED[1], BLEND[0][1], BLEND[1][1], PAIR[0][1], PAIR[1][1]]
    extra_f = [1e5, 80 * FLUX_ERR_SKY, 70 * FLUX_ERR_SKY, 80 * FLUX_ERR_SKY, 70 * FLUX_ERR_SKY]
    stars = plant_stars(
        (SIZE, SIZE), np.r_[x, extra_x], np.r_[y, extra_y], np.r_[flux, extra_f], SIGMA, 33
    )
    variance = NOISE**2 + stars / 10.0  # sky noise plus a gain-10 photon noise
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = stars + _sky(xx, yy) + rng.normal(size=stars.shape) * np.sqrt(variance)
    mask = np.zeros((SIZE, SIZE), np.int32)
    sx, sy = int(SATURATED[0]), int(SATURATED[1])
    mask[sy - 1 : sy + 2, sx - 1 : sx + 2] |= bit("SAT")
    image[sy - 1 : sy + 2, sx - 1 : sx + 2] = 3000.0  # clipped core
    mask[:, BAD_COLUMN] |= bit("BAD")
    image[:, BAD_COLUMN] = 1e4  # garbage under the mask
    nan_y, nan_x = rng.integers(10, SIZE - 10, (2, 6))
    image[nan_y, nan_x] = np.nan
    variance[nan_y[:2] + 1, nan_x[:2]] = np.nan
    # A star's footprint (PSF box + 1 px) is clean when none of those pixels is nearby.
    clean = np.abs(x - BAD_COLUMN) > 11
    for ny, nx in zip(nan_y, nan_x, strict=True):
        clean &= (np.abs(x - nx) > 11) | (np.abs(y - ny) > 11)
    clean &= (np.abs(x - nan_x[0]) > 11) | (np.abs(y - nan_y[0] - 1) > 11)
    clean &= (np.abs(x - nan_x[1]) > 11) | (np.abs(y - nan_y[1] - 1) > 11)
    image, variance = image.astype(np.float32), variance.astype(np.float32)
    found = detect_sources(image, variance, mask, PSF, threshold=10.0)
    return dict(
        image=image, variance=variance, mask=mask, x=x, y=y, flux=flux, clean=clean, found=found
    )


def _match(found, x, y, radius=1.5):
    """Index of the nearest detection to each (x, y), or -1 beyond ``radius``."""
    if found.x.size == 0:
        return np.full(np.size(x), -1)
    d = np.hypot(found.x[None, :] - np.atleast_1d(x)[:, None], found.y - np.atleast_1d(y)[:, None])
    j = np.argmin(d, axis=1)
    return np.where(d[np.arange(j.size), j] <= radius, j, -1)


def test_detection_recovers_clean_stars(scene):
    found = scene["found"]
    for name in ("x", "y", "flux", "flux_err", "snr"):
        assert getattr(found, name).dtype == np.float64
    assert np.all(np.diff(found.snr) <= 0)
    np.testing.assert_allclose(found.snr, found.flux / found.flux_err)
    clean = scene["clean"]
    assert clean.sum() >= 20
    j = _match(found, scene["x"][clean], scene["y"][clean])
    assert np.all(j >= 0), "a clean planted star was not detected"
    dx = found.x[j] - scene["x"][clean]
    dy = found.y[j] - scene["y"][clean]
    snr = found.snr[j]
    # Position: the Cramer-Rao error of a Gaussian star is sqrt(2) sigma / SNR per axis.
    sigma_pos = np.sqrt(2.0) * SIGMA / snr
    assert np.all(np.hypot(dx, dy) < 0.3)
    assert np.all(np.abs(dx) < 4.5 * sigma_pos) and np.all(np.abs(dy) < 4.5 * sigma_pos)
    # Flux: within 3 sigma, and the pulls have a sane spread.
    pull = (found.flux[j] - scene["flux"][clean]) / found.flux_err[j]
    assert np.all(np.abs(pull) < 3.0)
    assert 0.3 < np.mean(pull**2) < 2.0
    assert abs(np.mean(pull)) < 3.0 / np.sqrt(pull.size) + 0.2
    # flux_err matches the matched-filter error, inflated by the stars' photon noise.
    assert np.all(found.flux_err[j] >= 0.99 * FLUX_ERR_SKY)


def test_detection_has_no_spurious_sources(scene):
    found = scene["found"]
    j = _match(found, scene["x"], scene["y"])
    planted = np.zeros(found.x.size, bool)
    planted[j[j >= 0]] = True
    assert planted.all(), f"{(~planted).sum()} detections match no planted star"
    for sx, sy in (SATURATED, *BLEND, *PAIR):
        assert np.all(np.hypot(found.x - sx, found.y - sy) > 10)


def test_detection_saturation_and_isolation_cuts(scene):
    args = (scene["image"], scene["variance"], scene["mask"], PSF)
    no_sat = detect_sources(*args, saturated_planes=(), reject_blends=False)
    assert _match(no_sat, *SATURATED, radius=3)[0] >= 0
    by_level = detect_sources(*args, saturated_planes=(), saturation=2500.0, reject_blends=False)
    assert _match(by_level, *SATURATED, radius=3)[0] == -1
    # The 8 px pair: two peaks, removed by the isolation radius (default 2 FWHM = 9.4 px).
    loose = detect_sources(*args, isolation_radius=0.0)
    assert np.all(_match(loose, *np.array(PAIR).T) >= 0)
    # The 4 px blend is one peak of the matched filter; the shape test removes it.
    blend_centre = np.mean(BLEND, axis=0)
    assert _match(detect_sources(*args, reject_blends=False), *blend_centre)[0] >= 0
    top = detect_sources(*args, max_sources=5)
    np.testing.assert_array_equal(top.snr, scene["found"].snr[:5])


def test_detection_noiseless_star_is_exact():
    xs, ys, flux = 100.37, 80.81, 5000.0
    image = plant_stars((SIZE, SIZE), [xs, 7.0], [ys, 150.0], [flux, flux], SIGMA, 33)
    variance = np.ones((SIZE, SIZE), np.float32)
    found = detect_sources(image.astype(np.float32), variance, None, PSF)
    assert found.x.size == 1  # the star 7 px from the border is inside the default edge (8)
    assert abs(found.x[0] - xs) < 0.01 and abs(found.y[0] - ys) < 0.01
    assert found.flux[0] == pytest.approx(flux, rel=2e-3)
    both = detect_sources(image.astype(np.float32), variance, None, PSF, edge=3)
    assert both.x.size == 2


def test_detection_footprint_follows_the_fwhm_not_the_stamp():
    """A PSF stamp that holds the wings (here the Gaussian padded to 61 px, as the estimate's
    Moffat wings reach 5 FWHM) keeps the cuts' footprint at 3 FWHM: a star 20 px from a masked
    column and 20 px from the border is found (with the stamp's side, any source within 32 px
    of either was cut)."""
    xs, ys = 100.3, 20.4
    image = plant_stars((SIZE, SIZE), [xs], [ys], [5000.0], SIGMA, 33).astype(np.float32)
    variance = np.ones((SIZE, SIZE), np.float32)
    mask = np.zeros((SIZE, SIZE), np.int32)
    mask[:, 120] = bit("BAD")
    wide = np.pad(PSF, (61 - PSF.shape[0]) // 2)
    for psf in (PSF, wide):
        found = detect_sources(image, variance, mask, psf)
        assert found.x.size == 1 and abs(found.x[0] - xs) < 0.01


def test_detection_pure_noise_and_masked_images():
    rng = np.random.default_rng(7)
    noise = (rng.normal(size=(SIZE, SIZE)) * NOISE + 50.0).astype(np.float32)
    variance = np.full((SIZE, SIZE), NOISE**2, np.float32)
    assert detect_sources(noise, variance, None, PSF, threshold=10.0).x.size == 0

    masked = np.full((SIZE, SIZE), bit("BAD"), np.int32)
    empty = detect_sources(noise, variance, masked, PSF)
    assert empty.x.size == 0 and empty.snr.dtype == np.float64
    all_nan = np.full((SIZE, SIZE), np.nan, np.float32)
    assert detect_sources(all_nan, variance, None, PSF).x.size == 0


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(image=np.zeros(16)), "2-D"),
        (dict(variance=np.zeros((8, 9))), "variance"),
        (dict(mask=np.zeros((8, 9), np.int32)), "mask"),
        (dict(mask=np.zeros((16, 16))), "integer"),
        (dict(psf=np.ones((4, 4))), "odd square"),
        (dict(psf=np.ones((3, 5))), "odd square"),
        (dict(psf=np.ones((1, 1))), "odd square"),
        (dict(psf=np.full((3, 3), np.nan)), "non-finite"),
        (dict(psf=np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)), "positive sum"),
        (dict(threshold=0.0), "threshold"),
        (dict(exclude_planes=("NOPE",)), "Unknown mask plane"),
    ],
)
def test_detection_bad_input(change, match):
    args = dict(
        image=np.zeros((16, 16), np.float32),
        variance=np.ones((16, 16), np.float32),
        mask=None,
        psf=gaussian_stamp(5, 1.0),
    )
    args.update(change)
    image, variance, mask, psf = (args.pop(k) for k in ("image", "variance", "mask", "psf"))
    with pytest.raises(InvalidInputError, match=match):
        detect_sources(image, variance, mask, psf, **args)


def test_detection_shape_test_follows_a_varying_psf():
    """Stars whose Gaussian sigma runs from 1.5 px (left) to 4.5 px (right) fail the shape test
    against the central PSF (sigma 3) at both ends; against the PSF at their own position
    (``psf_at``) every one is kept, and a 4 px blend is still rejected."""
    size = 256
    rng = np.random.default_rng(3)
    xs = np.linspace(30, size - 30, 7)
    x, y = np.repeat(xs, 3), np.tile([60.0, 128.0, 196.0], xs.size)
    x, y = x + rng.uniform(-0.5, 0.5, x.size), y + rng.uniform(-0.5, 0.5, y.size)

    def sigma_at(px):
        return 1.5 + 3.0 * px / (size - 1)

    image = plant_stars((size, size), x, y, np.full(x.size, 2e4), sigma_at(x), 41)
    blend = plant_stars((size, size), [125.0, 130.0], [20.0, 20.0], [1e4, 1e4], 3.0, 41)
    rng_noise = rng.normal(size=image.shape)
    image = (image + blend + rng_noise).astype(np.float32)
    variance = np.ones(image.shape, np.float32)
    psf = gaussian_stamp(41, 3.0)
    central = detect_sources(image, variance, None, psf, isolation_radius=8.0)
    missed = _match(central, x, y) < 0
    assert missed[:3].all() and missed[-3:].all()  # the sharpest and broadest stars
    local = detect_sources(
        image,
        variance,
        None,
        psf,
        isolation_radius=8.0,
        psf_at=lambda px, py: gaussian_stamp(41, sigma_at(px)),
    )
    assert np.all(_match(local, x, y) >= 0)
    assert local.x.size == x.size  # the blend is not among them

    def broken_right(px, py):  # no usable PSF image on the right: the central reference there
        return gaussian_stamp(41, sigma_at(px)) * (np.nan if px > 150 else 1.0)

    partial = detect_sources(image, variance, None, psf, isolation_radius=8.0, psf_at=broken_right)
    missed = _match(partial, x, y) < 0
    assert not missed[:3].any() and missed[-3:].all()


def test_detection_extended_keeps_galaxies_and_rejects_sharp_peaks():
    """``extended`` (the kernel sources' setting) keeps a galaxy that the default shape test
    rejects; a cosmic ray (one hot pixel, sharper than the PSF) is rejected either way."""
    size = 200
    star, galaxy, ray = (50.3, 60.6), (140.2, 60.4), (100.0, 150.0)
    image = plant_stars((size, size), [star[0]], [star[1]], [2e4], 2.0, 41)
    image += plant_stars((size, size), [galaxy[0]], [galaxy[1]], [6e4], 5.0, 61)
    image[int(ray[1]), int(ray[0])] += 3000.0
    image = (image + np.random.default_rng(1).normal(size=image.shape)).astype(np.float32)
    variance = np.ones(image.shape, np.float32)
    psf = gaussian_stamp(31, 2.0)
    for extended, expected in ((False, [True, False, False]), (True, [True, True, False])):
        found = detect_sources(image, variance, None, psf, extended=extended)
        hits = [_match(found, *xy, radius=2.0)[0] >= 0 for xy in (star, galaxy, ray)]
        assert hits == expected, (extended, hits)
        assert found.x.size == sum(expected)
