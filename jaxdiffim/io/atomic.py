"""Atomic output files: write to a temporary file beside the target, then rename it."""

import contextlib
import os
import tempfile

from ..errors import InvalidInputError, OutputExistsError

__all__ = ["atomic_output"]


@contextlib.contextmanager
def atomic_output(path, overwrite=False):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one step.

    The temporary file keeps ``path``'s extensions (so ``.fits.gz`` is still compressed) and
    gets the permissions a new file would get (``0666 & ~umask``). On an exception it is
    removed and ``path`` is untouched.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(
            f"{path!r} exists; pass overwrite=True (--overwrite) to replace it."
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidInputError(f"Output directory {directory!r} does not exist; create it first.")
    name = os.path.basename(path)
    suffix = name[name.index(".") :] if "." in name else ""
    fd, tmp = tempfile.mkstemp(prefix=".jaxdiffim-", suffix=suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
