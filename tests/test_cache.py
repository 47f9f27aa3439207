"""The persistent caches: a second ``jaxdiffim subtract`` process compiles nothing, and traces
none of the stored programs (:mod:`jaxdiffim.core.programs`)."""

import json
import os
import subprocess
import sys

from utils import decam_path

from jaxdiffim.cache import CACHE_ENV, PROGRAMS, cache_dir

#: Runs the CLI on one DECam pair and prints how JAX's persistent cache answered.
SCRIPT = """
import io, logging, re, sys
stream = io.StringIO()
handler = logging.StreamHandler(stream)
handler.setLevel(logging.DEBUG)
logger = logging.getLogger("jax")
logger.addHandler(handler)
logger.setLevel(logging.DEBUG)
from jaxdiffim.cli.main import main
code = main(sys.argv[1:])
text = stream.getvalue()
names = "_subtract_and_decorrelate|_prepare_arrays|detection_maps_impl"
key = "(?:_[0-9a-f]+)?"  # a stored program's module is named after its key (programs.call)
traced = len(re.findall(f"Finished tracing (?:\\+ transforming )?(?:{names}){key} ", text))
print("RESULT", code, text.count("Cache miss for key"), text.count("Cache hit for key"), traced)
"""


def environment(cache):
    """This process's environment with the cache folder ``cache`` and none from JAX's settings
    (the test run shares one JAX cache between its processes: tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    return dict(env, **{CACHE_ENV: str(cache)})


def run_cli(tmp_path, cache, output):
    argv = ["subtract", decam_path("18b"), decam_path("04b"), "-o", str(output)]
    env = environment(cache)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]
    code, misses, hits, traced = (int(v) for v in line.split()[1:])
    assert code == 0
    return misses, hits, traced


def test_second_process_compiles_nothing(tmp_path):
    cache = tmp_path / "xla"
    misses, hits, traced = run_cli(tmp_path, cache, tmp_path / "a.fits")
    assert misses >= 5 and os.listdir(cache)  # a cold cache: every program compiled, stored
    assert traced >= 3 and len(os.listdir(cache / PROGRAMS)) >= 3
    (job,) = (cache / PROGRAMS / "jobs").iterdir()  # what the next run loads in the background
    keys = json.loads(job.read_text())
    assert len(keys) >= 3 and all((cache / PROGRAMS / f"{k}.program").exists() for k in keys)
    misses, hits, traced = run_cli(tmp_path, cache, tmp_path / "b.fits")
    assert misses == 0 and hits >= 5 and traced == 0


def test_cache_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_dir() is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == os.path.join(str(tmp_path), "jaxdiffim", "xla")


def test_off_leaves_jax_cache_and_keeps_the_store_off(monkeypatch):
    """``JAXDIFFIM_CACHE_DIR=off`` turns the program store off even where JAX has a cache
    folder of its own (this run has one: tests/conftest.py), and leaves JAX's settings alone."""
    import jax

    from jaxdiffim.cache import enable_compilation_cache
    from jaxdiffim.core import programs

    monkeypatch.setenv(CACHE_ENV, "off")
    folder = jax.config.jax_compilation_cache_dir
    assert enable_compilation_cache() is None
    assert programs.store() is None and jax.config.jax_compilation_cache_dir == folder


#: A program through the store, in a process of its own (prints its result).
PROGRAM = """
import jax, jax.numpy as jnp, numpy as np
from jaxdiffim.cache import enable_compilation_cache
from jaxdiffim.core import programs
enable_compilation_cache()

@jax.jit
def f(a):
    b = a[1:-1, 2:].astype(jnp.float32) * 2.0
    return jnp.fft.rfft2(b).real.sum() + jnp.cumsum(b, axis=0).mean()

print("RESULT", float(programs.call(f, np.arange(64 * 64, dtype=np.int32).reshape(64, 64) % 7)))
"""


def test_an_executable_from_jax_cache_is_not_stored(tmp_path):
    """With the store emptied (as after an upgrade) but JAX's cache still holding the program,
    the executable JAX loads from its cache is not stored: serialised again it lacks its code
    on a CPU, and the next process failed with "Function broadcast_multiply_fusion not
    found"."""
    env = environment(tmp_path / "xla")

    def run():
        proc = subprocess.run(
            [sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]

    first = run()  # compiled, stored, and in JAX's cache
    for path in (tmp_path / "xla" / PROGRAMS).iterdir():
        path.unlink()
    assert run() == first  # from JAX's cache: not stored
    assert run() == first


def test_an_upgrade_that_keeps_a_program_stores_it_again(tmp_path):
    """After an upgrade (another hash of the sources: the store's keys change) that leaves a
    program's HLO as it was, the program is compiled and stored again, not taken from JAX's
    cache (an executable that cannot be stored): before, every later process traced, lowered
    and loaded it from JAX's cache (the Task of a warm 1024² job 8.2 s against 2.2 s)."""
    env = environment(tmp_path / "xla")
    store = tmp_path / "xla" / PROGRAMS

    def run(version):
        script = PROGRAM.replace(
            "enable_compilation_cache()",
            f"programs._source_hash = lambda: {version!r}\nenable_compilation_cache()",
        )
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return [x for x in proc.stdout.splitlines() if x.startswith("RESULT")][-1]

    def stored():
        return sorted(p.name for p in store.glob("*.program"))

    first = run("1.0")
    assert len(stored()) == 1
    assert run("1.1") == first and len(stored()) == 2  # the new version's key: stored
    before = {p: (store / p).stat().st_mtime_ns for p in stored()}
    assert run("1.1") == first  # and loaded: nothing written again
    assert {p: (store / p).stat().st_mtime_ns for p in stored()} == before


def test_another_seeing_compiles_nothing():
    """Two pairs of one shape whose PSFs differ in width and in stamp side (another night's
    seeing) run the same prepare and subtraction programs: PSF-like arrays are zero-padded to
    bucket sides, and every footprint that follows the seeing (source growth, the detector's
    bad-pixel footprint, the saturation halo, the QA discs) is traced. Before, each seeing
    compiled both again (about 30 s on 2 cores at 1024²)."""
    import numpy as np
    from utils import masked, scene_pair

    from jaxdiffim.algorithms.alard_lupton import alard_lupton_subtract
    from jaxdiffim.algorithms.config import SubtractionConfig
    from jaxdiffim.algorithms.prepare import _prepare_arrays
    from jaxdiffim.core.masks import bit
    from jaxdiffim.core.pipeline import _subtract_and_decorrelate
    from jaxdiffim.testing.synthetic import gaussian_stamp

    config = SubtractionConfig(mode="convolveTemplate")
    sizes = []
    for t_sigma, s_sigma, side in ((1.6, 2.0, 25), (1.75, 2.25, 27)):
        sci, tmpl = scene_pair(s_sigma, t_sigma, n_src=40)
        science = masked(sci, crop=sci.border)
        template = masked(tmpl, crop=tmpl.border)
        sat = np.zeros(science.mask.shape, np.int32)
        sat[100:103, 100:103] = bit("SAT")  # the halo is drawn
        science = science._replace(mask=sat)
        result = alard_lupton_subtract(
            template,
            science,
            gaussian_stamp(side, t_sigma),
            gaussian_stamp(side, s_sigma),
            None,
            config,
        )
        assert np.isfinite(np.asarray(result.difference.image)).any()
        sizes.append((_prepare_arrays._cache_size(), _subtract_and_decorrelate._cache_size()))
    assert sizes[1] == sizes[0]
