"""ip_diffim's Task API on exposures: configs with ip_diffim's names, ``Struct`` results.

The stateful facade over the functional core; nothing in the core imports it.
"""

from .base import Struct, Task, TaskMetadata
from .decorrelate import DecorrelateALKernelConfig, DecorrelateALKernelTask
from .model_psf_match import KernelCellSet, ModelPsfMatchConfig, ModelPsfMatchTask
from .models import BackgroundModel, MatchingKernel
from .pex_config import (
    ChoiceField,
    Config,
    ConfigChoiceField,
    ConfigField,
    ConfigurableField,
    Field,
    FieldValidationError,
    ListField,
)
from .psf_match import (
    MakeKernelConfig,
    MakeKernelTask,
    PsfMatchConfig,
    PsfMatchConfigAL,
    PsfMatchConfigDF,
)
from .subtract import (
    AlardLuptonPreconvolveSubtractConfig,
    AlardLuptonPreconvolveSubtractTask,
    AlardLuptonSubtractConfig,
    AlardLuptonSubtractTask,
)

__all__ = [
    "AlardLuptonPreconvolveSubtractConfig",
    "AlardLuptonPreconvolveSubtractTask",
    "AlardLuptonSubtractConfig",
    "AlardLuptonSubtractTask",
    "BackgroundModel",
    "ChoiceField",
    "Config",
    "ConfigChoiceField",
    "ConfigField",
    "ConfigurableField",
    "DecorrelateALKernelConfig",
    "DecorrelateALKernelTask",
    "Field",
    "FieldValidationError",
    "ListField",
    "MakeKernelConfig",
    "MakeKernelTask",
    "KernelCellSet",
    "MatchingKernel",
    "ModelPsfMatchConfig",
    "ModelPsfMatchTask",
    "PsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "Struct",
    "Task",
    "TaskMetadata",
]
