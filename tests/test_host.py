"""Host arrays that XLA:CPU reads in place (jaxdiffim.core.host), as the FITS readers make them."""

import jax
import numpy as np
import pytest
from astropy.io import fits

from jaxdiffim.core import host
from jaxdiffim.io.fits import read_exposure


def test_aligned_planes_keep_values_and_give_native_byte_order():
    big_endian = np.arange(35, dtype=">f4").reshape(5, 7)
    out = host.copy(big_endian, np.float32)
    assert out.dtype == np.dtype(np.float32) and out.dtype.isnative
    assert host.is_aligned(out) and out.shape == (5, 7)
    np.testing.assert_array_equal(out, big_endian)
    assert host.aligned(out) is out  # already aligned: no copy
    again = host.copy(out)
    assert again is not out and np.shares_memory(again, out) is False
    zeros = host.zeros((3, 4), np.int32)
    assert host.is_aligned(zeros) and not zeros.any()
    assert host.empty((0, 3), np.float32).shape == (0, 3)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's host buffers")
def test_xla_reads_an_aligned_plane_in_place_and_copies_numpys():
    """The property the readers rely on: on the CPU, an aligned plane becomes a device buffer
    without a copy (a NumPy-allocated one, 16-byte aligned, is copied)."""
    plane = host.copy(np.ones((512, 512), np.float32))
    assert jax.device_put(plane).unsafe_buffer_pointer() == plane.ctypes.data
    raw = np.empty(512 * 512 + 16, np.float32)
    start = (16 - raw.ctypes.data % 64) % 64 // 4  # 16 bytes past a 64-byte boundary
    shifted = raw[start : start + 512 * 512].reshape(512, 512)
    assert shifted.ctypes.data % host.ALIGNMENT == 16
    assert jax.device_put(shifted).unsafe_buffer_pointer() != shifted.ctypes.data


def test_read_exposure_gives_aligned_planes(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.normal(100.0, 5.0, size=(64, 80)).astype(np.float32)
    data[3, 4] = np.nan
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(data).writeto(path)
    exp = read_exposure(path)
    mi = exp.maskedImage
    for plane in (mi.image, mi.variance, mi.mask):
        assert host.is_aligned(np.asarray(plane))
    assert np.asarray(mi.image)[3, 4] == 0.0  # no data there, flagged
    np.testing.assert_array_equal(np.asarray(mi.image)[10], data[10])
    with fits.open(path) as hdul:  # the file is not modified
        assert np.isnan(hdul[0].data[3, 4])


def test_release_free_memory_runs_where_glibc_is():
    import ctypes.util

    released = host.release_free_memory()
    assert isinstance(released, bool)
    if ctypes.util.find_library("c") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert released
