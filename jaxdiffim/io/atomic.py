"""Atomic output files: write to a temporary file beside the target, then rename it.

Temporary files and folders being written are registered (:func:`pending`), so that a signal
handler can remove them before the process ends (:func:`discard_pending`).
"""

import contextlib
import os
import shutil
import tempfile

from ..errors import InvalidInputError, OutputExistsError

__all__ = ["atomic_output", "discard_pending", "pending", "refuse_input_targets"]

_PENDING = []


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
    with pending(tmp):
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


@contextlib.contextmanager
def pending(path):
    """Register ``path`` (a temporary file or folder) as unfinished while the block runs."""
    _PENDING.append(os.fspath(path))
    try:
        yield path
    finally:
        _PENDING.remove(os.fspath(path))


def discard_pending():
    """Remove every registered unfinished file or folder; return how many were there."""
    removed = 0
    for path in list(_PENDING):
        try:
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed += 1
        except OSError:
            continue
    return removed


def _same(a, b):
    a, b = os.fspath(a), os.fspath(b)
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_input_targets(outputs, inputs):
    """Refuse outputs that would replace one of the inputs, or each other.

    Parameters
    ----------
    outputs : dict
        ``{description: path or None}`` of the files to be written.
    inputs : dict
        ``{description: path or None}`` of the files read (non-path entries are ignored).

    Raises
    ------
    InvalidInputError
        Naming both files; ``--overwrite`` does not lift it.
    """
    paths = lambda d: [(k, v) for k, v in d.items() if isinstance(v, (str, os.PathLike))]  # noqa: E731
    outs = paths(outputs)
    for i, (what, out) in enumerate(outs):
        for other, path in paths(inputs) + outs[:i]:
            if _same(out, path):
                raise InvalidInputError(
                    f"The {what} {os.fspath(out)!r} is the {other} file: it would be replaced. "
                    "Choose another output path (--overwrite never replaces an input)."
                )
