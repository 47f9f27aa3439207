"""``Task`` and ``Struct`` in the style of ``lsst.pipe.base`` (without the Butler).

A Task holds a validated config, a name within a task hierarchy, a logger under
``jaxdiffim.<full name>`` and a metadata dict; :meth:`Task.timer` records wall and CPU times
of a block into the metadata (``<name>StartUtc``, ``<name>Duration``, ``<name>CpuTime``).
"""

import contextlib
import datetime
import inspect
import logging
import time

from ..cache import enable_compilation_cache
from .pex_config import ConfigurableField

__all__ = ["Lazy", "Struct", "Task", "TaskMetadata"]


class Lazy:
    """A :class:`Struct` value computed on first access (e.g. an output image nobody reads)."""

    def __init__(self, make):
        self.make = make


class Struct:
    """A simple attribute container (``lsst.pipe.base.Struct``).

    A value given as :class:`Lazy` is computed the first time it is read (and kept).
    """

    def __init__(self, **kwargs):
        lazy = {k: v for k, v in kwargs.items() if isinstance(v, Lazy)}
        object.__setattr__(self, "_lazy", lazy)
        for key, value in kwargs.items():
            if key not in lazy:
                setattr(self, key, value)

    def __getattr__(self, name):  # only called for attributes not set yet
        lazy = self.__dict__.get("_lazy", {})
        if name not in lazy:
            raise AttributeError(f"Struct has no attribute {name!r}")
        value = lazy[name].make()  # an error leaves the field to be made on the next read
        setattr(self, name, value)
        lazy.pop(name, None)
        return value

    def __copy__(self):
        return Struct(**self.getDict())

    def __getstate__(self):  # pickling makes every field
        return self.getDict()

    def __setstate__(self, state):
        object.__setattr__(self, "_lazy", {})
        self.__dict__.update(state)

    def getDict(self):  # noqa: N802 - pipe_base's name
        for name in list(self._lazy):
            getattr(self, name)
        return {k: v for k, v in self.__dict__.items() if k != "_lazy"}

    def mergeItems(self, struct, *names):  # noqa: N802
        for name in names:
            setattr(self, name, getattr(struct, name))

    def copy(self):
        return Struct(**self.getDict())

    def __eq__(self, other):
        return isinstance(other, Struct) and self.getDict() == other.getDict()

    def __len__(self):
        return len(self.getDict())

    def __repr__(self):
        fields = [*(k for k in self.__dict__ if k != "_lazy"), *self._lazy]
        return "Struct(" + ", ".join(fields) + ")"


class TaskMetadata(dict):
    """Task metadata: a dict with pipe_base's ``add``/``getScalar`` accessors."""

    def add(self, name, value):
        self.setdefault(name, [])
        if not isinstance(self[name], list):
            self[name] = [self[name]]
        self[name].append(value)

    def getScalar(self, name):  # noqa: N802
        value = self[name]
        return value[-1] if isinstance(value, list) else value


class Task:
    """Base class of jaxdiffim's Tasks.

    Parameters
    ----------
    config : Config, optional
        Default: ``ConfigClass()``. Validated and frozen.
    name : str, optional
        Default: ``_DefaultName``.
    parentTask : Task, optional
        Makes this a subtask; its full name is ``parent.full.name.name``.
    log : logging.Logger, optional
    """

    ConfigClass = None
    _DefaultName = None
    canMultiprocess = True

    def __init__(self, config=None, *, name=None, parentTask=None, log=None):  # noqa: N803
        enable_compilation_cache()
        if config is None:
            if parentTask is not None and name is not None:
                config = getattr(parentTask.config, name)
            else:
                config = self.ConfigClass()
        config.validate()
        config.freeze()
        self.config = config
        self._name = name or self._DefaultName or type(self).__name__
        if parentTask is None:
            self._fullName = self._name
            self._taskDict = {}
        else:
            self._fullName = f"{parentTask._fullName}.{self._name}"
            self._taskDict = parentTask._taskDict
        self._parent = parentTask
        self._taskDict[self._fullName] = self
        self.metadata = TaskMetadata()
        self.log = log or logging.getLogger(f"jaxdiffim.{self._fullName}")

    def getName(self):  # noqa: N802
        return self._name

    def getFullName(self):  # noqa: N802
        return self._fullName

    def getTaskDict(self):  # noqa: N802
        """``{full name: task}`` of this task's whole hierarchy."""
        return dict(self._taskDict)

    def getFullMetadata(self):  # noqa: N802
        """``{full name: metadata}`` of this task and every subtask."""
        prefix = self._fullName
        return {
            name: task.metadata
            for name, task in self._taskDict.items()
            if name == prefix or name.startswith(prefix + ".")
        }

    def emptyMetadata(self):  # noqa: N802
        """Clear the metadata of this task and its subtasks."""
        for task in self.getFullMetadata():
            self._taskDict[task].metadata = TaskMetadata()

    def makeSubtask(self, name, **kwargs):  # noqa: N802
        """Build subtask ``name`` from ``config.<name>.target`` and attach it as ``self.<name>``."""
        sub_config = getattr(self.config, name)
        target = sub_config.target
        task = target(config=sub_config, name=name, parentTask=self, **kwargs)
        setattr(self, name, task)
        return task

    @classmethod
    def makeField(cls, doc):  # noqa: N802
        """A :class:`ConfigurableField` whose target is this task."""
        return ConfigurableField(doc=doc, target=cls)

    @contextlib.contextmanager
    def timer(self, name, logLevel=logging.DEBUG):  # noqa: N803
        """Record the wall time and CPU time of the block in the metadata."""
        self.metadata[f"{name}StartUtc"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.metadata[f"{name}Duration"] = time.perf_counter() - wall
            self.metadata[f"{name}CpuTime"] = time.process_time() - cpu
            self.log.log(logLevel, "%s took %.3f s", name, self.metadata[f"{name}Duration"])

    def getResourceConfig(self):  # noqa: N802
        """No resource requirements beyond the process (``None``, as pipe_base's default)."""
        return None

    def getSchemaCatalogs(self):  # noqa: N802
        """This task writes no schema catalogues: ``{}``."""
        return {}

    def getAllSchemaCatalogs(self):  # noqa: N802
        """Schema catalogues of this task and its subtasks: ``{}``."""
        out = {}
        for name in self.getFullMetadata():
            out.update(self._taskDict[name].getSchemaCatalogs())
        return out

    def runQuantum(self, butlerQC, inputRefs, outputRefs):  # noqa: N802, N803
        """Not available: there is no Butler. Call :meth:`run` with exposures instead."""
        raise NotImplementedError(
            f"{type(self).__name__}.runQuantum needs the LSST Butler, which jaxdiffim does not "
            f"have; call {type(self).__name__}.run(...) with exposures instead "
            f"(signature: run{inspect.signature(self.run)})."
        )

    def run(self, *args, **kwargs):  # pragma: no cover - subclasses implement
        raise NotImplementedError
