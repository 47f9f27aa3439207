import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# the tests do not write to the user's compilation cache (test_cache.py uses its own folders)
os.environ["JAXDIFFIM_CACHE_DIR"] = "off"

from hypothesis import settings  # noqa: E402

# property-based tests: a few examples per test by default (CI), 1000 on demand
# (HYPOTHESIS_PROFILE=fuzz; see tests/test_fuzz.py)
settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True)
settings.register_profile("fuzz", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
