"""Compiled programs kept on disk, so that a new process neither traces, lowers nor compiles them.

JAX's persistent compilation cache skips XLA's compilation in a later process, but every
process still traces each jitted function and lowers it to StableHLO before it can look the
program up (about 1 s for the subtraction's programs on a CPU). :func:`call` keeps the compiled
executable itself instead (:mod:`jax.experimental.serialize_executable`): the first process
compiles the program for the arguments' shapes and dtypes and the static settings and writes
the executable next to the compilation cache; a later process loads it and calls it directly.
Results are those of the jitted function. (Loading still costs XLA's deserialisation, about
0.1-0.6 s a program on a CPU.)

The store is off until :func:`set_store` names a folder (the command line and the Tasks do it
through :func:`jaxdiffim.cache.enable_compilation_cache`); inside a caller's ``jit``, ``vmap`` or
``grad`` (any traced argument) the jitted function is called as it is. Keys hold the function,
the static settings, the argument structure, shapes and dtypes, the JAX and jaxlib versions, the
backend and its devices, the host CPU's features and ``XLA_FLAGS`` (a CPU executable is machine
code), the JAX settings that change tracing (x64, matmul precision, dtype promotion) and a hash
of jaxdiffim's sources, so that an edited or upgraded installation, or another machine sharing
the folder, does not load an old program. Files are written atomically; an unreadable file is
ignored and rewritten; an executable that cannot be serialised is used in this process only, and
so is one that JAX loaded from its own persistent cache (serialised again, an executable loaded
on a CPU lacks its functions: "Function slice_convert_fusion not found" at its first call in
the next process). So that an edit or upgrade of jaxdiffim that leaves a program's HLO as
it was does not leave the program to JAX's cache for good (every process then traced, lowered
and loaded it from there: the Task of a warm 1024² job took 8.2 s against 2.2 s), its compiled
module is named after the store's key (which holds the sources' hash): JAX's cache never has
it, the program is compiled once more and stored. (Turning JAX's cache off for the store's own
compiles is not possible: JAX decides once per process whether its cache is used.)
The files are pickles of executables (machine code): like JAX's own cache folder, the folder
must be the user's. Threads may call :func:`call` at once (the command line estimates both
images' PSFs at once): one thread loads or compiles a program, the others wait for it.

Loading overlaps the job: :func:`job` records which programs a named job (the command line
names it by the images' shapes and the configuration) called, and the next run of that job
starts loading them in two background threads while the main thread reads the files and
estimates the PSFs (measured 2026-12-02 on a 2-core VM: a warm 1024² command took 7.3 s
against 7.8 s loading each program when first called).
"""

import concurrent.futures
import contextlib
import functools
import hashlib
import json
import logging
import os
import pathlib
import pickle
import platform
import tempfile
import threading

import jax
from jax.experimental.serialize_executable import deserialize_and_load, serialize

__all__ = ["MAP_SHARE", "call", "job", "release_near_map_limit", "set_store", "store"]

log = logging.getLogger(__name__)

_STATE = {"folder": None}
_LOADED = {}
_PENDING = {}  # key -> Future of a background load (see job)
_JOB = {"used": None}  # keys called in the current job, in order
_KEY_LOCKS = {}  # key -> Lock: one thread loads or compiles a program, the others wait
_LOCKS_GUARD = threading.Lock()
#: Threads that load a job's programs in the background.
LOAD_THREADS = 2
_HITS = threading.local()  # hits of JAX's persistent compilation cache, per thread
#: Hex digits of a program's key in the name of its compiled module.
_NAME_DIGITS = 12


def _cache_hits():
    return getattr(_HITS, "count", 0)


def _count_cache_hits(event, **_):
    if event == "/jax/compilation_cache/cache_hits":
        _HITS.count = _cache_hits() + 1


jax.monitoring.register_event_listener(_count_cache_hits)


#: Share of Linux's ``vm.max_map_count`` at which :func:`release_near_map_limit` drops the
#: compiled programs.
MAP_SHARE = 0.5


def _map_counts():
    """This process's memory mappings and Linux's limit on them; ``None`` off Linux."""
    try:
        with open("/proc/sys/vm/max_map_count") as handle:
            limit = int(handle.read())
        with open("/proc/self/maps", "rb") as handle:
            used = sum(1 for _ in handle)
    except (OSError, ValueError):
        return None
    return used, limit


def release_near_map_limit(share=MAP_SHARE):
    """Drop every compiled program of this process (``jax.clear_caches``, and the loaded ones
    here) once its memory mappings pass ``share`` of Linux's ``vm.max_map_count`` (65530 by
    default).

    Each XLA:CPU executable keeps mappings for its kernels' machine code (about 2000 for one
    subtraction's programs, jaxlib 0.10) and never gives them back while it is cached; at the
    limit LLVM cannot allocate and XLA jumps to a null function pointer (a segfault). A process
    that subtracts pairs of many shapes or configurations crossed it after about 30. Dropped
    programs are compiled again when needed (or loaded from the persistent cache). Call it
    between jobs, never inside a traced function.

    Returns
    -------
    bool
        Whether the programs were dropped.
    """
    counts = _map_counts()
    if counts is None or counts[0] < share * counts[1]:
        return False
    log.info(
        "%d of %d memory mappings in use: dropping the compiled programs (they are compiled "
        "or loaded again when needed).",
        *counts,
    )
    jax.clear_caches()
    _LOADED.clear()
    for future in _PENDING.values():
        future.cancel()
    _PENDING.clear()
    return True


def set_store(folder):
    """Keep compiled programs in ``folder`` (created if needed); ``None`` turns the store off."""
    if folder is not None:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as err:
            log.warning("Program store disabled: cannot create %s (%s).", folder, err)
            folder = None
    _STATE["folder"] = folder


@functools.cache
def _loader():
    return concurrent.futures.ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="jaxdiffim-load")


def _manifest(name):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return os.path.join(_STATE["folder"], "jobs", safe + ".json")


@contextlib.contextmanager
def job(name):
    """Load in the background the programs the last run of job ``name`` called; record those
    this run calls.

    On entering, the stored executables listed for ``name`` start loading in
    :data:`LOAD_THREADS` threads (XLA's deserialisation, 0.1-0.6 s a program, runs beside the
    caller's host work), and :func:`call` waits for a program still loading instead of loading
    it again. On leaving without an error, the programs called in between are listed for the
    next run. Nothing happens while the store is off; jobs do not nest (an inner one is
    ignored).

    Parameters
    ----------
    name : str
        What identifies a job's programs: the same name should mean the same array shapes and
        static settings (a wrong list only costs loads in the background).
    """
    if _STATE["folder"] is None or _JOB["used"] is not None:
        yield
        return
    path = _manifest(name)
    try:
        with open(path) as handle:
            listed = [str(k) for k in json.load(handle)]
    except (OSError, ValueError, TypeError):
        listed = []
    if listed and _lapack_ready():
        for key in listed:
            file = os.path.join(_STATE["folder"], key + ".program")
            if key not in _LOADED and key not in _PENDING and os.path.exists(file):
                _PENDING[key] = _loader().submit(_load, file)
    _JOB["used"] = []
    try:
        yield
        used = list(dict.fromkeys(_JOB["used"]))
        if used != listed:
            _write_manifest(path, used)
    finally:
        _JOB["used"] = None
        for key, future in list(_PENDING.items()):  # not called by this run
            if future.cancel():
                del _PENDING[key]
            elif future.done():
                program = _PENDING.pop(key).result()
                if program is not None:
                    _LOADED[key] = program


def _write_manifest(path, keys):
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".job-")
        with os.fdopen(fd, "w") as handle:
            json.dump(keys, handle)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:  # caching is an optimisation, never an error
        log.debug("Could not write the job list %s (%s).", path, err)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def store():
    """The folder of the compiled programs, or ``None`` when the store is off."""
    return _STATE["folder"]


def jaxlib_version():
    """The installed jaxlib's version."""
    import jaxlib

    return getattr(jaxlib, "__version__", "?")


@functools.cache
def _source_hash():
    root = pathlib.Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(jax.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _machine():
    """The backend's devices, the host CPU and its features, and ``XLA_FLAGS``."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    device = jax.devices()[0]
    client = getattr(device, "client", None)
    return "|".join(
        (
            platform.machine(),
            platform.processor(),
            flags.strip(),
            device.device_kind,
            str(getattr(client, "platform_version", "")),
            os.environ.get("XLA_FLAGS", ""),
        )
    )


#: JAX settings that change how a program is traced or lowered (part of every key).
_SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_dtype_promotion",
    "jax_explicit_x64_dtypes",
)


def _key(function, leaves, tree, static):
    settings = [repr(getattr(jax.config, name, None)) for name in _SETTINGS]
    parts = [
        _source_hash(),
        jaxlib_version(),
        f"{function.__module__}.{function.__qualname__}",
        repr(sorted(static.items())),
        str(tree),
        jax.default_backend(),
        _machine(),
        *settings,
        *(
            f"{jax.numpy.shape(x)}:{jax.numpy.result_type(x)}:{type(x).__name__}:"
            f"{getattr(x, 'weak_type', None)}:{getattr(x, 'sharding', None)}"
            for x in leaves
        ),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


@functools.cache
def _lapack_ready():
    """Set jaxlib's LAPACK kernels' function pointers, as JAX does when it lowers a
    linear-algebra operation or an exported program (a loaded executable that calls them
    crashed the process without it). False, with one warning, where this JAX lacks the
    (private) function: the store then only writes."""
    try:
        from jax._src.lax import linalg

        linalg.initialize_lapack()
    except (ImportError, AttributeError) as err:
        log.warning("Program store: cannot load executables with this JAX (%s).", err)
        return False
    return True


def _load(path):
    if not _lapack_ready():
        return None
    try:
        with open(path, "rb") as handle:
            blob, in_tree, out_tree = pickle.load(handle)
        return deserialize_and_load(blob, in_tree, out_tree[0]), out_tree[1]
    except Exception as err:  # noqa: BLE001 - a bad file is a cache miss
        log.debug("Ignoring the stored program %s (%s).", path, err)
        return None


def _save(path, compiled, out_tree):
    tmp = None
    try:
        blob, in_tree, flat_tree = serialize(compiled)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".program-")
        with os.fdopen(fd, "wb") as handle:
            pickle.dump((blob, in_tree, (flat_tree, out_tree)), handle)
        os.replace(tmp, path)
        tmp = None
    except Exception as err:  # noqa: BLE001 - caching is an optimisation, never an error
        log.debug("Could not store the program %s (%s).", path, err)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def call(jitted, *args, **static):
    """``jitted(*args, **static)``, through the program store when it is on.

    Parameters
    ----------
    jitted : callable
        A ``jax.jit`` function whose keyword arguments ``static`` are all static.
    *args
        Its array arguments (pytrees).
    **static
        Its static keyword arguments (hashable, with a faithful ``repr``).
    """
    folder = _STATE["folder"]
    leaves, tree = jax.tree_util.tree_flatten(args)
    if folder is None or any(isinstance(x, jax.core.Tracer) for x in leaves):
        return jitted(*args, **static)
    key = _key(jitted, leaves, tree, static)
    if _JOB["used"] is not None:
        _JOB["used"].append(key)
    program = _LOADED.get(key)
    if program is None:
        with _key_lock(key):  # another thread may be loading or compiling it
            program = _LOADED.get(key) or _get(jitted, leaves, tree, static, key, folder)
    compiled, out_tree = program
    return jax.tree_util.tree_unflatten(out_tree, compiled(*leaves))


def _key_lock(key):
    with _LOCKS_GUARD:
        return _KEY_LOCKS.setdefault(key, threading.Lock())


def _get(jitted, leaves, tree, static, key, folder):
    """The program of ``key``: loading in the background, stored, or compiled (and stored)."""
    program = None
    if key in _PENDING:
        program = _PENDING.pop(key).result()  # loading in the background (see job)
    if program is None:
        path = os.path.join(folder, key + ".program")
        program = _load(path) if os.path.exists(path) else None
        if program is None:
            out_tree = []

            def flat(*flat_args):
                out = jitted(*jax.tree_util.tree_unflatten(tree, flat_args), **static)
                out_leaves, structure = jax.tree_util.tree_flatten(out)
                out_tree.append(structure)
                return out_leaves

            # the key in the program's name: JAX's cache cannot answer for it with an
            # executable of an earlier version of the sources (which could not be stored)
            name = f"{getattr(jitted, '__name__', 'program')}_{key[:_NAME_DIGITS]}"
            flat.__name__ = flat.__qualname__ = name
            lowered = jax.jit(flat).lower(*leaves)
            hits = _cache_hits()
            compiled = lowered.compile()
            program = (compiled, out_tree[0])
            if _cache_hits() == hits:
                _save(path, *program)
            else:
                log.debug("Not storing %s: it came from JAX's compilation cache.", path)
    _LOADED[key] = program
    return program
