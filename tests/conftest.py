import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# the tests do not write to the user's compilation cache (test_cache.py uses its own folders)
os.environ["JAXDIFFIM_CACHE_DIR"] = "off"
