import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# the tests do not write to the user's compilation cache (test_cache.py uses its own folders),
# and jaxdiffim's program store is off (tests count traces)...
os.environ["JAXDIFFIM_CACHE_DIR"] = "off"
# ...but one JAX compilation cache serves the whole run: both xdist workers and every CLI
# process the tests start compile each program once (the run's own folder, removed at its end)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _folder = tempfile.mkdtemp(prefix="jaxdiffim-tests-xla-")
    atexit.register(shutil.rmtree, _folder, True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _folder
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"


import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# property-based tests: a few examples per test by default (CI), 1000 on demand
# (HYPOTHESIS_PROFILE=fuzz; see tests/test_fuzz.py)
settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True)
settings.register_profile("fuzz", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop the compiled programs after each test file (they come back from the run's JAX
    cache if needed). Every XLA:CPU executable holds memory mappings of its kernels (about 2000
    for one subtraction's programs); a worker that kept all of them crossed Linux's 65530
    (``vm.max_map_count``) late in the run, and XLA then jumped to a null function pointer."""
    yield
    jax.clear_caches()
