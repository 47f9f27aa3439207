"""ip_diffim's public Task API exists here with compatible signatures.

The lists are ip_diffim's (``subtractImages.py``, ``imageDecorrelation.py``, ``makeKernel.py``,
``psfMatch.py`` and pipe_base's ``Task``): every positional parameter of ip_diffim's signature
must be accepted under the same name and in the same order, and keyword parameters with
defaults must exist with the same defaults.
"""

import inspect

import pytest

import jaxdiffim
from jaxdiffim import tasks

# (object path, ip_diffim's parameters in order; "name=default" for keyword defaults)
SIGNATURES = [
    ("AlardLuptonSubtractTask.run", ["template", "science", "sources", "visitSummary=None"]),
    ("AlardLuptonSubtractTask.runConvolveTemplate", ["template", "science", "selectSources"]),
    ("AlardLuptonSubtractTask.runConvolveScience", ["template", "science", "selectSources"]),
    (
        "AlardLuptonSubtractTask.finalize",
        [
            "template",
            "science",
            "difference",
            "kernel",
            "templateMatched=True",
            "preConvMode=False",
            "preConvKernel=None",
            "spatiallyVarying=False",
        ],
    ),
    (
        "AlardLuptonPreconvolveSubtractTask.run",
        ["template", "science", "sources", "visitSummary=None"],
    ),
    (
        "DecorrelateALKernelTask.run",
        [
            "scienceExposure",
            "templateExposure",
            "subtractedExposure",
            "psfMatchingKernel",
            "preConvKernel=None",
            "xcen=None",
            "ycen=None",
            "svar=None",
            "tvar=None",
            "templateMatched=True",
            "preConvMode=False",
        ],
    ),
    ("Task.__init__", ["config=None", "name=None", "parentTask=None", "log=None"]),
    ("Task.makeSubtask", ["name"]),
    ("Task.timer", ["name"]),
    ("Task.runQuantum", ["butlerQC", "inputRefs", "outputRefs"]),
]

TASK_METHODS = [
    "getName",
    "getFullName",
    "getFullMetadata",
    "emptyMetadata",
    "getTaskDict",
    "makeSubtask",
    "makeField",
    "timer",
    "getResourceConfig",
    "getSchemaCatalogs",
    "getAllSchemaCatalogs",
    "runQuantum",
]

CONFIG_FIELDS = {
    "AlardLuptonSubtractConfig": [
        "mode",
        "makeKernel",
        "doDecorrelation",
        "decorrelate",
        "requiredTemplateFraction",
        "minTemplateFractionForExpectedSuccess",
        "doScaleVariance",
        "doSubtractBackground",
        "detectionThreshold",
        "detectionThresholdMax",
        "maxKernelSources",
        "minKernelSources",
        "excludeMaskPlanes",
        "badMaskPlanes",
        "preserveTemplateMask",
        "renameTemplateMask",
        "allowKernelSourceDetection",
        "restrictKernelEdgeSources",
    ],
    "PsfMatchConfigAL": [
        "kernelSize",
        "scaleByFwhm",
        "kernelSizeFwhmScaling",
        "kernelSizeMin",
        "kernelSizeMax",
        "spatialModelType",
        "spatialKernelOrder",
        "spatialBgOrder",
        "fitForBackground",
        "sizeCellX",
        "sizeCellY",
        "nStarPerCell",
        "maxSpatialIterations",
        "singleKernelClipping",
        "kernelSumClipping",
        "spatialKernelClipping",
        "candidateResidualMeanMax",
        "candidateResidualStdMax",
        "maxKsumSigma",
        "constantVarianceWeighting",
        "alardNGauss",
        "alardDegGauss",
        "alardSigGauss",
        "alardGaussBeta",
        "alardMinSig",
        "alardMinSigDeconv",
    ],
    "PsfMatchConfigDF": [
        "useRegularization",
        "regularizationType",
        "centralRegularizationStencil",
        "forwardRegularizationOrders",
        "regularizationBorderPenalty",
        "lambdaType",
        "lambdaValue",
        "lambdaScaling",
    ],
    "MakeKernelConfig": ["kernel", "fwhmExposureGrid", "fwhmExposureBuffer"],
    "DecorrelateALKernelConfig": ["ignoreMaskPlanes", "completeVarPlanePropagation"],
}

TOP_LEVEL = [
    "AlardLuptonSubtractTask",
    "AlardLuptonSubtractConfig",
    "AlardLuptonPreconvolveSubtractTask",
    "AlardLuptonPreconvolveSubtractConfig",
    "DecorrelateALKernelTask",
    "DecorrelateALKernelConfig",
    "MakeKernelTask",
    "MakeKernelConfig",
    "PsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "NoKernelCandidatesError",
    "InsufficientKernelSourcesError",
    "BadSubtractionError",
    "NoWorkFound",
]


def _resolve(dotted):
    obj = tasks
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("dotted, expected", SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_signature_compatible(dotted, expected):
    params = [
        p
        for p in inspect.signature(_resolve(dotted)).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    names = [p.name for p in params]
    for i, spec in enumerate(expected):
        name, _, default = spec.partition("=")
        assert name in names, f"{dotted} lacks parameter {name!r}"
        if not default:
            assert names.index(name) == i, f"{dotted}: {name!r} is not positional #{i}"
        else:
            assert repr(params[names.index(name)].default) == default, (dotted, name)
    # every extra parameter is optional, so ip_diffim-style calls still work
    extra = [p for p in params if p.name not in {s.partition("=")[0] for s in expected}]
    assert all(p.default is not inspect.Parameter.empty for p in extra), (dotted, extra)


def test_task_base_methods_exist():
    for name in TASK_METHODS:
        assert callable(getattr(tasks.Task, name)), name
    assert tasks.AlardLuptonSubtractTask.ConfigClass is tasks.AlardLuptonSubtractConfig
    assert tasks.DecorrelateALKernelTask.canMultiprocess is True


@pytest.mark.parametrize("cls, fields", CONFIG_FIELDS.items())
def test_config_fields(cls, fields):
    config = getattr(tasks, cls)()
    for name in fields:
        getattr(config, name)  # AttributeError if missing


def test_top_level_names():
    for name in TOP_LEVEL:
        assert getattr(jaxdiffim, name) is not None, name
    config = jaxdiffim.AlardLuptonSubtractConfig()
    assert config.makeKernel.kernel.active.kernelSize == 21
