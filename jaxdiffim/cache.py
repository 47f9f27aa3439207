"""JAX's persistent compilation cache for jaxdiffim's command line and Task facade.

A process that subtracts a pair compiles a few hundred XLA programs (seconds on a CPU); with
the cache, a later process on images of the same shapes loads them from disk instead.
:func:`enable_compilation_cache` points JAX's ``jax_compilation_cache_dir`` at

- ``$JAXDIFFIM_CACHE_DIR`` when it is set (``off``, ``0``, ``none`` or empty: no cache),
- else ``$XDG_CACHE_HOME/jaxdiffim/xla`` (``~/.cache/jaxdiffim/xla``),

and caches every program (no minimum compile time or size); its ``programs`` sub-folder keeps
the traced programs themselves (:mod:`jaxdiffim.core.programs`), so that a later process does
not even trace them. It leaves the settings of a cache directory the user configured in JAX
alone (a local one gets the ``programs`` sub-folder, unless ``$JAXDIFFIM_CACHE_DIR`` is off),
and does nothing once this process has compiled without a cache (JAX fixes the cache at its
first compilation): call it before any JAX work. The ``jaxdiffim`` command calls it first
thing; ``AlardLuptonSubtractTask`` and the other Tasks call it when constructed. Library users
of the functional API call it themselves if they want it.
"""

import logging
import os

import jax

from .core import programs

__all__ = ["CACHE_ENV", "PROGRAMS", "cache_dir", "enable_compilation_cache"]

#: Sub-folder of the cache holding traced programs (:mod:`jaxdiffim.core.programs`).
PROGRAMS = "programs"

#: Environment variable naming the cache folder (``off`` disables the cache).
CACHE_ENV = "JAXDIFFIM_CACHE_DIR"

log = logging.getLogger(__name__)

_OFF = ("", "0", "off", "none", "false", "no")


def cache_dir():
    """The cache folder from :data:`CACHE_ENV` or the user's cache folder; ``None`` when off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else os.path.expanduser(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxdiffim", "xla")


def enable_compilation_cache():
    """Turn on JAX's persistent compilation cache in :func:`cache_dir`.

    Returns
    -------
    str or None
        The cache folder in use, or ``None`` when the cache is off or cannot be used (a folder
        that cannot be created is logged and skipped: caching is an optimisation, never an
        error).
    """
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None  # off: no store, and JAX's own settings left as they are
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        if "://" not in configured:  # a local folder: the traced programs go next to it
            programs.set_store(os.path.join(configured, PROGRAMS))
        return configured
    path = cache_dir()
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        log.warning("Compilation cache disabled: cannot create %s (%s).", path, err)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    programs.set_store(os.path.join(path, PROGRAMS))
    return path
