"""The persistent caches: a second ``jaxdiffim subtract`` process compiles nothing, and traces
none of the stored programs (:mod:`jaxdiffim.core.programs`)."""

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
traced = len(re.findall(f"Finished tracing (?:\\+ transforming )?(?:{names}) ", text))
print("RESULT", code, text.count("Cache miss for key"), text.count("Cache hit for key"), traced)
"""


def run_cli(tmp_path, cache, output):
    argv = ["subtract", decam_path("18b"), decam_path("04b"), "-o", str(output)]
    env = dict(os.environ, **{CACHE_ENV: str(cache)})
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
