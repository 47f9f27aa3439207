"""The command as a process: log records on stderr (also while a progress bar is drawn),
warnings through ``logging``, signals that remove unfinished outputs before exiting, and XLA's
memory-saving schedule."""

import logging
import os
import signal
import sys

__all__ = [
    "MEMORY_SCHEDULE",
    "PROGRESS",
    "configure_logging",
    "prefer_memory_schedule",
    "progress",
    "stop",
]

PROGRESS = {"drawn": False}

#: XLA:CPU's option that orders a program's operations depth first, to hold fewer
#: temporaries, instead of breadth first (its default, for concurrency). Measured on the
#: 4096² benchmark pair (jaxlib 0.10.2): the subtraction program's working memory 426 -> 241
#: MB, the prepare program's 409 -> 306 MB, the command's peak 2.49-2.53 -> 2.30-2.38 GB, at
#: the same speed (3 interleaved runs each); the same results bit for bit.
MEMORY_SCHEDULE = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def prefer_memory_schedule():
    """Add :data:`MEMORY_SCHEDULE` to ``XLA_FLAGS`` unless it names that option already.

    XLA reads its flags once, when JAX first starts a backend: call it before any
    computation (the command does, in its own process only).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    name = MEMORY_SCHEDULE.split("=")[0]
    if name not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {MEMORY_SCHEDULE}".strip()


def progress(i, n, failed, skipped=0):
    """Draw the ``--pairs`` progress bar (``i`` of ``n`` pairs done) on stderr's last line."""
    stream = sys.stderr
    width = 30
    done = int(width * i / n)
    extra = f", {skipped} skipped" if skipped else ""
    stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} pairs, {failed} failed{extra}")
    stream.flush()
    PROGRESS["drawn"] = True


def stop(signum, frame):
    """SIGTERM, SIGINT, SIGHUP: remove the files being written, say so, exit ``128 + signum``.

    The process ends here, without unwinding (a signal can arrive where Python ignores
    exceptions, e.g. in a garbage-collector callback) and without the interpreter's teardown
    (JAX's threads may still be running a computation; tearing the runtime down under them
    crashes).
    """
    from ..io.atomic import discard_pending

    removed = discard_pending()
    name = signal.Signals(signum).name
    sys.stdout.flush()
    sys.stderr.write(
        f"jaxdiffim: stopped by {name}; "
        + (f"removed {removed} unfinished output(s).\n" if removed else "no output was left.\n")
    )
    sys.stderr.flush()
    os._exit(128 + signum)


class _LineHandler(logging.StreamHandler):
    """Log records on their own line, also while the ``--pairs`` progress bar is drawn."""

    def emit(self, record):
        if PROGRESS["drawn"]:
            self.stream.write("\n")
            PROGRESS["drawn"] = False
        super().emit(record)


def configure_logging(verbose):
    """Log records (INFO with ``verbose``, else WARNING) and warnings, astropy's included, once
    each on stderr, each on its own line."""
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LineHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    probing = logging.getLogger("jax._src.xla_bridge")  # "Unable to initialize backend 'tpu'"
    if probing.level == logging.NOTSET:
        probing.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings become log records
    from astropy import log as astropy_log  # it logs its warnings itself: through ours only

    for own in list(astropy_log.handlers):
        astropy_log.removeHandler(own)
    astropy_log.propagate = True
