"""Property-based fuzzing of the FITS reader and of the array pipeline (hypothesis).

Profiles (``tests/conftest.py``): ``ci`` (the default, a few examples per test) and ``fuzz``
(1000 per test, on demand: ``HYPOTHESIS_PROFILE=fuzz python -m pytest -p no:xdist
tests/test_fuzz.py``, about 15 minutes on 2 cores). The properties:

* ``read_exposure`` on any FITS file — random dtypes and byte orders, afw-like extension subsets,
  odd header keywords, truncated or corrupted bytes — returns an exposure whose non-finite
  pixels are flagged, or raises a named jaxdiffim error; it never changes the file;
* ``alard_lupton_subtract`` on a pair damaged at random (NaN/Inf boxes, bad columns, zero or
  negative variance, mask bits, extreme values, a global scale of 1e-6 … 1e12) returns a
  difference without an unflagged NaN, Inf or non-positive variance pixel, or raises a named
  error; it never changes its inputs; and a global scale of both inputs scales the difference.
"""

import hashlib
import io

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from utils import scene_pair

from jaxdiffim import MaskedImage
from jaxdiffim.algorithms.alard_lupton import alard_lupton_subtract
from jaxdiffim.algorithms.config import SubtractionConfig
from jaxdiffim.core.masks import bit
from jaxdiffim.errors import JaxDiffimError
from jaxdiffim.io import read_exposure
from jaxdiffim.testing.synthetic import gaussian_stamp

DTYPES = ["u1", ">i2", "<i2", ">i4", "<i4", ">f4", "<f4", ">f8", "<f8"]
HEADER_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(-(10**6), 10**6),
    st.text(alphabet="abc 0.1-e", max_size=8),
)


@st.composite
def fits_files(draw):
    """Bytes of a FITS file: plain or afw-like HDUs, random values, maybe damaged."""
    shape = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def plane(dtype):
        values = rng.normal(100.0, 30.0, shape)
        special = rng.random(shape) < draw(st.sampled_from([0.0, 0.01, 0.5, 1.0]))
        if np.dtype(dtype).kind == "f":
            values[special] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, 3e38], special.sum())
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        if info is not None:
            values = np.clip(values, info.min, info.max)
        return values.astype(dtype)

    layout = draw(st.sampled_from(["plain", "extension", "afw", "partial"]))
    header = fits.Header()
    for key in draw(st.lists(st.sampled_from(["GAIN", "RDNOISE", "SATURATE", "AVSKY"]))):
        value = draw(HEADER_VALUES)
        header[key] = value if not isinstance(value, float) or np.isfinite(value) else str(value)
    if layout == "plain":
        hdus = [fits.PrimaryHDU(plane(draw(st.sampled_from(DTYPES))), header=header)]
    elif layout == "extension":
        hdus = [fits.PrimaryHDU(header=header), fits.ImageHDU(plane(">f4"))]
    else:
        names = ["IMAGE", "MASK", "VARIANCE"]
        if layout == "partial":
            names = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        dtypes = {"IMAGE": ">f4", "MASK": ">i4", "VARIANCE": ">f4"}
        hdus = [fits.PrimaryHDU(header=header)]
        hdus += [fits.ImageHDU(plane(dtypes[n]), name=n) for n in names]
    buffer = io.BytesIO()
    fits.HDUList(hdus).writeto(buffer, output_verify="silentfix")
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 20))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=fits_files())
def test_reader_never_crashes(tmp_path, content):
    path = tmp_path / "fuzz.fits"
    path.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    try:
        exposure = read_exposure(path)
    except JaxDiffimError:
        pass
    else:
        image = exposure.image.array
        variance = exposure.variance.array
        mask = exposure.mask.array
        assert image.dtype == np.float32 and mask.dtype == np.int32
        assert image.shape == variance.shape == mask.shape
        unusable = ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0)
        assert not np.any(unusable & (mask == 0)), "an unusable pixel without a mask bit"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # never modified


# ------------------------------------------------------------------------------- pipeline

N = 128
PSF_T, PSF_S = gaussian_stamp(25, 2.0), gaussian_stamp(25, 2.4)


def _base():
    sci, tmpl = scene_pair(2.4, 2.0, size=N, n_src=25)
    c = (tmpl.image.shape[0] - N) // 2
    out = []
    for scene, cut in ((tmpl, c), (sci, 0)):
        sl = np.s_[cut : cut + N, cut : cut + N]
        out.append(
            MaskedImage(
                np.array(scene.image[sl], np.float32),
                np.array(scene.variance[sl], np.float32),
                np.zeros((N, N), np.int32),
            )
        )
    return tuple(out)


BASE = _base()


@st.composite
def damage(draw):
    """A list of (image index, plane, row slice, column slice, value)."""
    steps = []
    for _ in range(draw(st.integers(0, 4))):
        which = draw(st.integers(0, 1))
        plane = draw(st.sampled_from(["image", "variance", "mask"]))
        if plane == "mask":
            value = draw(st.sampled_from([bit("BAD"), bit("SAT"), bit("NO_DATA"), bit("CR")]))
        elif plane == "image":
            value = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e31, -3e38, 0.0]))
        else:
            value = draw(st.sampled_from([np.nan, np.inf, 0.0, -1.0]))
        y0, x0 = draw(st.integers(0, N - 1)), draw(st.integers(0, N - 1))
        column = draw(st.booleans())  # a bad column, or a box
        h = N if column else draw(st.integers(1, 30))
        w = draw(st.integers(1, 3)) if column else draw(st.integers(1, 30))
        rows = slice(0, N) if column else slice(y0, y0 + h)
        steps.append((which, plane, rows, slice(x0, x0 + w), value))
    return steps


def _damaged(steps, scale=1.0):
    pair = []
    for i, m in enumerate(BASE):
        planes = {
            "image": np.array(m.image) * np.float32(scale),
            "variance": np.array(m.variance) * np.float32(scale) ** 2,
            "mask": np.array(m.mask),
        }
        for which, plane, rows, cols, value in steps:
            if which == i:
                if plane == "mask":
                    planes["mask"][rows, cols] |= value
                else:
                    planes[plane][rows, cols] = value
        pair.append(MaskedImage(planes["image"], planes["variance"], planes["mask"]))
    return pair


def _check(result):
    d = result.difference
    image, variance, mask = (np.asarray(a) for a in d)
    unusable = ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0)
    assert not np.any(unusable & (mask == 0)), "an unusable pixel without a mask bit"


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=damage(), scale=st.sampled_from([1e-6, 1e-3, 1.0, 1e3, 1e6, 1e9, 1e12]))
def test_pipeline_on_damaged_pairs(steps, scale):
    t, s = _damaged(steps, scale)
    copies = [np.array(a, copy=True) for a in (*t, *s)]
    try:
        result = alard_lupton_subtract(t, s, PSF_T, PSF_S, None, SubtractionConfig())
    except JaxDiffimError as err:
        event(f"named error: {type(err).__name__}")
    else:
        event("subtracted")
        _check(result)
    for before, after in zip(copies, (*t, *s), strict=True):
        np.testing.assert_array_equal(before, np.asarray(after))


@pytest.fixture(scope="module")
def reference():
    return alard_lupton_subtract(*BASE, PSF_T, PSF_S, None, SubtractionConfig())


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exponent=st.floats(-6.0, 12.0))
def test_difference_scales_with_the_inputs(reference, exponent):
    """Both inputs ×f (f = 10^[-6, 12]): difference ×f, variance ×f², mask unchanged."""
    f = 10.0**exponent
    assume(np.isfinite(f))
    out = alard_lupton_subtract(*_damaged([], f), PSF_T, PSF_S, None, SubtractionConfig())
    ref = reference.difference
    sigma = np.sqrt(ref.variance)
    assert np.max(np.abs(out.difference.image / f - ref.image) / sigma) < 1e-3
    np.testing.assert_allclose(out.difference.variance / f**2, ref.variance, rtol=1e-3)
    np.testing.assert_array_equal(out.difference.mask, ref.mask)
