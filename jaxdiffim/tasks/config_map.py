"""The one table between ip_diffim's Task config fields and :class:`SubtractionConfig`.

Each row of :data:`FIELD_MAP` pairs a Task config path (ip_diffim's names, relative to an
``AlardLuptonSubtractConfig``) with a :class:`~jaxdiffim.algorithms.config.SubtractionConfig`
path. ``makeKernel.kernel.*`` rows apply to both kernel bases (``AL`` and ``DF``);
``makeKernel.kernel.AL``/``DF`` rows to one. The Task's defaults are written from
``SubtractionConfig()`` through this table (:func:`apply_to_task`), the Task hands its config
to the algorithm through it (:func:`core_config`), and the CLI uses it to accept ip_diffim names
in ``-c NAME=VALUE`` (:func:`core_path`). Nothing else translates between the two.
"""

import dataclasses

from ..algorithms.config import SubtractionConfig, apply_overrides
from ..errors import InvalidInputError

__all__ = [
    "FIELD_MAP",
    "CORE_ONLY",
    "TASK_ONLY",
    "apply_to_task",
    "core_config",
    "core_path",
    "kernel_core_config",
]

_K = "makeKernel.kernel."

#: (Task config path, SubtractionConfig path).
FIELD_MAP = (
    ("mode", "mode"),
    ("doDecorrelation", "do_decorrelation"),
    ("decorrelate.completeVarPlanePropagation", "complete_var_plane_propagation"),
    ("decorrelate.nodesPerAxis", "decorrelation_nodes"),
    ("spatiallyVaryingDecorrelation", "spatially_varying_decorrelation"),
    ("doScaleVariance", "do_scale_variance"),
    ("doSubtractBackground", "do_subtract_background"),
    ("doSubtractSky", "subtract_sky"),
    ("skyBinSize", "sky_bin_size"),
    ("requiredTemplateFraction", "required_template_fraction"),
    ("minTemplateFractionForExpectedSuccess", "min_template_fraction_for_expected_success"),
    ("maxKernelSources", "max_kernel_sources"),
    ("minKernelSources", "min_kernel_sources"),
    ("restrictKernelEdgeSources", "restrict_kernel_edge_sources"),
    ("excludeMaskPlanes", "exclude_mask_planes"),
    ("detectionThreshold", "detection_threshold"),
    ("detectionThresholdMax", "detection_threshold_max"),
    ("badMaskPlanes", "bad_mask_planes"),
    ("preserveTemplateMask", "preserve_template_mask"),
    ("renameTemplateMask", "rename_template_mask"),
    ("raiseOnBadSubtractionRatio", "raise_on_bad_subtraction_ratio"),
    ("badSubtractionRatioThreshold", "bad_subtraction_ratio_threshold"),
    ("badSubtractionVariationThreshold", "bad_subtraction_variation_threshold"),
    ("makeKernel.fwhmExposureGrid", "fwhm_exposure_grid"),
    ("makeKernel.fwhmExposureBuffer", "fwhm_exposure_buffer"),
    (_K + "*.kernelSize", "kernel.kernel_size"),
    (_K + "*.scaleByFwhm", "scale_by_fwhm"),
    (_K + "*.kernelSizeFwhmScaling", "kernel_size_fwhm_scaling"),
    (_K + "*.kernelSizeMin", "kernel_size_min"),
    (_K + "*.kernelSizeMax", "kernel_size_max"),
    (_K + "*.spatialModelType", "kernel.spatial_model_type"),
    (_K + "*.spatialKernelOrder", "kernel.spatial_kernel_order"),
    (_K + "*.spatialBgOrder", "kernel.spatial_bg_order"),
    (_K + "*.fitForBackground", "kernel.fit_for_background"),
    (_K + "*.sizeCellX", "kernel.size_cell_x"),
    (_K + "*.sizeCellY", "kernel.size_cell_y"),
    (_K + "*.nStarPerCell", "kernel.n_star_per_cell"),
    (_K + "*.maxSpatialIterations", "kernel.max_spatial_iterations"),
    (_K + "*.singleKernelClipping", "kernel.single_kernel_clipping"),
    (_K + "*.kernelSumClipping", "kernel.kernel_sum_clipping"),
    (_K + "*.spatialKernelClipping", "kernel.spatial_kernel_clipping"),
    (_K + "*.candidateResidualMeanMax", "kernel.candidate_residual_mean_max"),
    (_K + "*.candidateResidualStdMax", "kernel.candidate_residual_std_max"),
    (_K + "*.maxKsumSigma", "kernel.max_ksum_sigma"),
    (_K + "*.constantVarianceWeighting", "kernel.constant_variance_weighting"),
    (_K + "AL.alardDegGauss", "kernel.degrees"),
    (_K + "AL.alardSigGauss", "alard_sig_gauss"),
    (_K + "AL.alardGaussBeta", "alard_gauss_beta"),
    (_K + "AL.alardMinSig", "alard_min_sig"),
    (_K + "AL.alardMinSigDeconv", "alard_min_sig_deconv"),
    (_K + "DF.useRegularization", "kernel.use_regularization"),
    (_K + "DF.regularizationType", "kernel.regularization_type"),
    (_K + "DF.centralRegularizationStencil", "kernel.central_regularization_stencil"),
    (_K + "DF.forwardRegularizationOrders", "kernel.forward_regularization_orders"),
    (_K + "DF.regularizationBorderPenalty", "kernel.regularization_border_penalty"),
    (_K + "DF.lambdaType", "kernel.lambda_type"),
    (_K + "DF.lambdaValue", "kernel.lambda_value"),
    (_K + "DF.lambdaScaling", "kernel.lambda_scaling"),
)

#: Core fields with no Task field: the basis follows ``makeKernel.kernel.name``, and the
#: clip-loop bound is a fixed-length loop of the core (ip_diffim loops until nothing changes).
CORE_ONLY = ("kernel.kernel_basis", "kernel.max_clip_rounds")

#: Task fields with no core field, and why.
TASK_ONLY = {
    "allowKernelSourceDetection": "Task policy: retry with detection when a catalogue is short",
    "makeKernel.kernel.name": "selects kernel.kernel_basis",
    "decorrelate.ignoreMaskPlanes": "DecorrelateALKernelTask only",
    "decorrelate.badMaskPlanes": "DecorrelateALKernelTask only (the subtraction: badMaskPlanes)",
}

_BASES = {"AL": "alard-lupton", "DF": "delta-function"}


def _get(obj, path):
    for part in path.split("."):
        obj = obj[part] if part in _BASES and not hasattr(obj, part) else getattr(obj, part)
    return obj


def _core_value(config, path):
    obj = config
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _rows(basis):
    """Rows with the ``*`` resolved for ``basis`` (``"AL"`` or ``"DF"``)."""
    for task_path, core in FIELD_MAP:
        if task_path.startswith(_K):
            which = task_path[len(_K) :].split(".", 1)[0]
            if which not in ("*", basis):
                continue
            task_path = task_path.replace(_K + "*.", f"{_K}{basis}.")
        yield task_path, core


def _set(task_config, path, value):
    *parents, leaf = path.split(".")
    obj = task_config
    for part in parents:
        obj = obj[part] if part in _BASES else getattr(obj, part)
    setattr(obj, leaf, list(value) if isinstance(value, tuple) else value)


def apply_to_task(core, task_config):
    """Write ``core`` (a SubtractionConfig) into a Task config, for both kernel bases."""
    for basis in _BASES:
        for task_path, core_path in _rows(basis):
            _set(task_config, task_path, _core_value(core, core_path))
    name = {v: k for k, v in _BASES.items()}[core.kernel.kernel_basis]
    task_config.makeKernel.kernel.name = name
    if name == "AL":
        task_config.makeKernel.kernel["AL"].alardNGauss = len(core.alard_sig_gauss)
    return task_config


def _changes(kernel_config, basis):
    """Core changes from one kernel config (the ``makeKernel.kernel.*`` rows)."""
    changes = {"kernel.kernel_basis": _BASES[basis]}
    for task_path, core_path in _rows(basis):
        if task_path.startswith(_K):
            value = getattr(kernel_config, task_path.rsplit(".", 1)[1])
            changes[core_path] = tuple(value) if isinstance(value, list) else value
    return changes


def core_config(task_config, mode=None):
    """The :class:`SubtractionConfig` for a Task config (``mode`` overrides the config's).

    Fields of both bases are read (the AL widths from ``AL``, the DF regularisation from
    ``DF``), so a Task config written by :func:`apply_to_task` maps back exactly.
    """
    name = task_config.makeKernel.kernel.name
    changes = {"kernel.kernel_basis": _BASES[name]}
    for task_path, core_path in FIELD_MAP:
        task_path = task_path.replace(_K + "*.", f"{_K}{name}.")
        value = _get(task_config, task_path)
        changes[core_path] = tuple(value) if isinstance(value, list) else value
    if mode is not None:
        changes["mode"] = mode
    return apply_overrides(SubtractionConfig(), changes)


def kernel_core_config(kernel_config, basis):
    """A :class:`SubtractionConfig` with the fields of one kernel config (``PsfMatchConfigAL``
    for ``basis="AL"``, ``PsfMatchConfigDF`` for ``"DF"``) and core defaults elsewhere; used
    by ``ModelPsfMatchTask``, whose config holds a kernel config alone."""
    return apply_overrides(SubtractionConfig(), _changes(kernel_config, basis))


def core_path(name):
    """The SubtractionConfig path for ``name``: a core path, or a Task path of the table.

    Task paths may name the kernel as ``makeKernel.kernel.active``, ``.AL`` or ``.DF``.

    Raises
    ------
    InvalidInputError
        ``name`` is neither.
    """
    core_paths = {f.name for f in dataclasses.fields(SubtractionConfig)}
    core_paths |= {"kernel." + f.name for f in dataclasses.fields(SubtractionConfig().kernel)}
    if name in core_paths:
        return name
    for prefix in (_K + "active.", _K + "AL.", _K + "DF."):
        if name.startswith(prefix):
            name = _K + "*." + name[len(prefix) :]
            break
    for task_path, core in FIELD_MAP:
        if name == task_path or name == task_path.replace(".AL.", ".*.").replace(".DF.", ".*."):
            return core
    raise InvalidInputError(
        f"Unknown configuration field {name!r}: give a SubtractionConfig field (e.g. "
        "min_kernel_sources, kernel.spatial_kernel_order) or an ip_diffim Task field (e.g. "
        "minKernelSources, makeKernel.kernel.active.spatialKernelOrder)."
    )
