"""The store of traced programs (jaxdiffim.core.programs): same results, safe fallbacks."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffim.core import programs
from jaxdiffim.core.convolve import MaskedImage


@functools.partial(jax.jit, static_argnames=("power",))
def _program(masked, scale, *, power):
    return {"out": masked.image**power * scale, "mask": masked.mask | 2}, jnp.sum(masked.variance)


@pytest.fixture
def store(tmp_path):
    programs.set_store(str(tmp_path / "programs"))
    programs._LOADED.clear()
    yield tmp_path / "programs"
    programs.set_store(None)
    programs._LOADED.clear()


def _args(rows=8):
    """Arguments of ``rows`` x 9 pixels: each test its own shape, so that no test finds its
    program in the JAX cache this run shares (an executable from it is never stored)."""
    rng = np.random.default_rng(1)
    masked = MaskedImage(
        jnp.asarray(rng.normal(size=(rows, 9)), jnp.float32),
        jnp.ones((rows, 9), jnp.float32),
        jnp.zeros((rows, 9), jnp.int32),
    )
    return masked, jnp.float32(1.5)


def _same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)


def test_stored_program_gives_the_jitted_result(store):
    want = _program(*_args(), power=2)
    _same(programs.call(_program, *_args(), power=2), want)  # compiled and written
    assert len(os.listdir(store)) == 1
    programs._LOADED.clear()  # as a new process: read from the file
    _same(programs.call(_program, *_args(), power=2), want)
    programs.call(_program, *_args(), power=3)  # another static setting: another program
    assert len(os.listdir(store)) == 2


def test_a_job_loads_its_programs_in_the_background(store, monkeypatch):
    args = _args(6)
    want = _program(*args, power=2)
    with programs.job("pair"):
        programs.call(_program, *args, power=2)
    (key,) = json.loads((store / "jobs" / "pair.json").read_text())
    assert (store / f"{key}.program").exists()
    loads = []
    real = programs._load
    monkeypatch.setattr(programs, "_load", lambda path: loads.append(path) or real(path))
    programs._LOADED.clear()  # as a new process
    with programs.job("pair"):
        assert list(programs._PENDING) == [key]  # loading from the start of the job
        _same(programs.call(_program, *args, power=2), want)
        assert not programs._PENDING
    assert len(loads) == 1  # in the background, not again by call
    programs._LOADED.clear()
    with pytest.raises(ZeroDivisionError), programs.job("pair"):
        programs.call(_program, *args, power=3)
        raise ZeroDivisionError  # a failed job keeps the list of the last good one
    assert json.loads((store / "jobs" / "pair.json").read_text()) == [key]
    programs._LOADED.clear()
    programs._PENDING.clear()
    with programs.job("another"):  # nothing listed: nothing loaded
        assert not programs._PENDING
    programs._PENDING.clear()


def test_threads_share_one_compile(store, monkeypatch):
    """Two threads that call one new program at once (the command line estimates both PSFs at
    once) compile and store it once, and both get its result."""
    import threading

    saves = []
    real = programs._save
    monkeypatch.setattr(programs, "_save", lambda *a: saves.append(a[0]) or real(*a))
    args = _args(5)
    want = _program(*args, power=2)
    start, out = threading.Barrier(2), [None, None]

    def run(i):
        start.wait()
        out[i] = programs.call(_program, *args, power=2)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(saves) == 1 and len(os.listdir(store)) == 1
    for got in out:
        _same(got, want)


def test_a_corrupt_file_is_a_miss(store):
    programs.call(_program, *_args(7), power=2)
    (path,) = store.iterdir()
    path.write_bytes(b"not a program")
    programs._LOADED.clear()
    _same(programs.call(_program, *_args(7), power=2), _program(*_args(7), power=2))


def test_off_and_under_tracing_call_the_function(store):
    masked, scale = _args()
    grad = jax.grad(lambda s: programs.call(_program, masked, s, power=2)[0]["out"].sum())(scale)
    assert np.isclose(grad, float(jnp.sum(masked.image**2)))
    assert not os.listdir(store)  # traced arguments never touch the store
    programs.set_store(None)
    _same(programs.call(_program, masked, scale, power=2), _program(masked, scale, power=2))


def test_compiled_programs_are_dropped_near_the_map_limit(monkeypatch):
    """Past a share of Linux's ``vm.max_map_count`` the compiled programs are dropped (XLA
    segfaults at the limit); below it nothing is."""
    used, limit = programs._map_counts()  # this process's, read from /proc (Linux)
    assert 0 < used < limit
    f = jax.jit(lambda x: x * 3.0)
    f(jnp.ones(4))
    monkeypatch.setattr(programs, "_map_counts", lambda: (400, 1000))
    assert not programs.release_near_map_limit()
    assert f._cache_size() == 1
    monkeypatch.setattr(programs, "_map_counts", lambda: (700, 1000))
    assert programs.release_near_map_limit()
    assert f._cache_size() == 0
