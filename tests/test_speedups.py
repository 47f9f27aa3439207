"""The shortcuts taken for speed give the answers of the plain computations they replace."""

import numpy as np
import pytest

from jaxdiffim.algorithms.footprints import footprint_filter, footprint_map
from jaxdiffim.core.decorrelation import _fast_size
from jaxdiffim.tasks.base import Lazy, Struct


def _crowded_field(n=512, seed=3):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, n)).astype(np.float32) * 5.0
    u = np.arange(-10, 11)
    psf = np.exp(-0.5 * (u[:, None] ** 2 + u[None, :] ** 2) / 2.4**2)
    psf /= psf.sum()
    for _ in range(250):
        x, y = rng.integers(12, n - 12, 2)
        image[y - 10 : y + 11, x - 10 : x + 11] += 10 ** rng.uniform(1.5, 4.5) * psf
    return image, psf


def test_binned_footprints_agree_with_full_resolution():
    image, psf = _crowded_field()
    variance = np.full(image.shape, 25.0, np.float32)
    mask = np.zeros(image.shape, np.int32)
    binned, size, binning = footprint_filter(psf)
    assert binning == 2 and binned.shape[0] % 2 == 1
    assert (
        binned.sum() == pytest.approx(1.0)
        and np.unravel_index(binned.argmax(), binned.shape) == (binned.shape[0] // 2,) * 2
    )
    full = np.asarray(footprint_map(image, variance, mask, psf, 5.0, size, True, 1)) != 0
    fast = np.asarray(footprint_map(image, variance, mask, binned, 5.0, size, True, 2)) != 0
    assert 0.05 < full.mean() < 0.5
    assert (full == fast).mean() > 0.97
    assert abs(full.mean() - fast.mean()) < 0.01
    # a narrow PSF is matched at full resolution
    assert footprint_filter(np.outer(*2 * [np.exp(-0.5 * np.arange(-3, 4) ** 2)]))[2] == 1


def test_fast_size_is_scipys_next_fast_len_made_even():
    from scipy.fft import next_fast_len

    for n in range(1, 3000):
        size = next_fast_len(n, real=True)
        while size % 2:
            size = next_fast_len(size + 1, real=True)
        assert _fast_size(n) == size


def test_lazy_struct_fields_are_made_once_when_read():
    calls = []

    def make():
        calls.append(1)
        return 42

    s = Struct(a=1, b=Lazy(make))
    assert calls == [] and "b" in repr(s) and len(s) == 2 and calls == [1]
    assert s.b == 42 and calls == [1]  # made once, then kept
    assert s.getDict() == {"a": 1, "b": 42}
    assert s == Struct(a=1, b=42) and s.copy() == s
    with pytest.raises(AttributeError):
        _ = s.c


def test_lazy_fields_survive_errors_copies_and_pickling():
    import copy
    import pickle

    state = {"fail": True}

    def make():
        if state["fail"]:
            raise MemoryError("first try")
        return [1, 2]

    s = Struct(a=1, b=Lazy(make))
    with pytest.raises(MemoryError):
        _ = s.b
    state["fail"] = False
    c = copy.copy(s)  # a copy makes its fields: the original keeps its own
    assert c.b == [1, 2] and s.b == [1, 2]
    assert pickle.loads(pickle.dumps(Struct(a=1, b=Lazy(lambda: 3)))).b == 3


def test_difference_psf_correlation_matches_scipy():
    """The numpy-FFT correlation of the difference PSF (scipy.signal is not imported by the
    CLI) against scipy's ``same``-mode correlation."""
    from scipy import signal

    from jaxdiffim.algorithms.difference_psf import _correlate

    rng = np.random.default_rng(1)
    image = rng.normal(size=(41, 41))
    for side in (7, 43):
        kernel = rng.normal(size=(side, side))
        ref = signal.fftconvolve(image, kernel[::-1, ::-1], mode="same")
        np.testing.assert_allclose(_correlate(image, kernel), ref, atol=1e-12)


def test_stamp_designs_built_in_chunks_are_the_whole_batch_design():
    """map_in_chunks (the fit's design 64 stamps at a time, to bound memory) gives the design
    of the whole batch at once, for both bases."""
    import jax
    import jax.numpy as jnp

    from jaxdiffim.core.basis import alard_lupton_parts
    from jaxdiffim.core.normal_equations import (
        add_background_column,
        al_raw_design,
        df_raw_design,
        map_in_chunks,
    )

    rng = np.random.default_rng(7)
    stamps = jnp.asarray(rng.normal(size=(128, 19, 19)))
    with jax.enable_x64(True):
        stamps = stamps.astype(jnp.float64)
        phi, _, _ = alard_lupton_parts(jnp.asarray([0.7, 1.5, 3.0]), (4, 2, 2), 9)
        for build in (
            lambda t: add_background_column(al_raw_design(t, phi, (4, 2, 2))),
            lambda t: add_background_column(df_raw_design(t, 9)),
        ):
            whole = np.asarray(build(stamps))
            chunked = np.asarray(jax.jit(lambda t, b=build: map_in_chunks(b, t, 32))(stamps))
            assert chunked.shape == whole.shape == (128, whole.shape[1], 11 * 11)
            np.testing.assert_allclose(chunked, whole, rtol=1e-13, atol=1e-13)
        # a chunk that does not divide the batch: one pass
        odd = np.asarray(map_in_chunks(build, stamps[:100], 32))
        np.testing.assert_array_equal(odd, np.asarray(build(stamps[:100])))
