"""One configuration: the Task table, the CLI overrides, traced numbers, shared policies."""

import dataclasses

import jax
import numpy as np
import pytest
from utils import basis_for, candidates_for, masked, scene_pair

from jaxdiffim.algorithms import alard_lupton as al
from jaxdiffim.algorithms.config import FILE_DEFAULTS, SubtractionConfig, config_paths
from jaxdiffim.cli.subtract import file_config, task_config
from jaxdiffim.core import status as st
from jaxdiffim.core.config import NUMBER_FIELDS, KernelFitConfig
from jaxdiffim.core.fit import fit_kernel_jit, prepare_fit_arguments
from jaxdiffim.errors import InvalidInputError
from jaxdiffim.tasks import AlardLuptonPreconvolveSubtractTask, AlardLuptonSubtractTask
from jaxdiffim.tasks.config_map import CORE_ONLY, FIELD_MAP, TASK_ONLY, core_config, core_path


def test_task_defaults_are_the_core_defaults():
    for task in (AlardLuptonSubtractTask, AlardLuptonPreconvolveSubtractTask):
        assert core_config(task.ConfigClass()) == SubtractionConfig()


def test_table_covers_every_core_field_once():
    mapped = [core for _, core in FIELD_MAP]
    assert sorted(set(mapped) | set(CORE_ONLY)) == config_paths()
    assert len(mapped) == len(set(mapped))


def _task_fields(config, prefix=""):
    out = []
    for name in type(config)._fields():
        value = getattr(config, name)
        if hasattr(value, "_configs"):  # a ConfigChoiceField: the choice, and each basis
            out.append(f"{prefix}{name}.name")
            for basis, sub in value._configs.items():
                out += _task_fields(sub, f"{prefix}{name}.{basis}.")
        elif hasattr(type(value), "_fields"):
            out += _task_fields(value, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_table_covers_every_task_field():
    fields = _task_fields(AlardLuptonSubtractTask.ConfigClass())
    mapped = set()
    for task_path, _ in FIELD_MAP:
        for basis in ("AL", "DF"):
            mapped.add(task_path.replace(".*.", f".{basis}."))
    derived = {"makeKernel.kernel.AL.alardNGauss"}  # len(alard_sig_gauss)
    unmapped = set(fields) - mapped - set(TASK_ONLY) - derived
    # PsfMatchConfig fields that ip_diffim's subtraction never reads
    assert unmapped == set(), unmapped


@pytest.mark.parametrize("basis", ["alard-lupton", "delta-function"])
def test_round_trip_through_the_task_config(basis):
    core = SubtractionConfig().replace(
        mode="convolveScience",
        min_kernel_sources=7,
        do_subtract_background=True,
        detection_threshold_max=900.0,
        exclude_mask_planes=("NO_DATA", "BAD"),
        **{
            "kernel.kernel_basis": basis,
            "kernel.spatial_kernel_order": 2,
            "kernel.max_ksum_sigma": 2.5,
            "kernel.lambda_value": 0.5,
        },
    )
    cfg = task_config(AlardLuptonSubtractTask, core)
    assert core_config(cfg) == core


def test_file_config_and_names_from_both_worlds():
    assert file_config() == SubtractionConfig().replace(**FILE_DEFAULTS)
    cfg = file_config(
        {
            "minKernelSources": 5,
            "makeKernel.kernel.active.spatialKernelOrder": 0,
            "kernel.spatial_bg_order": 1,
            "bad_subtraction_ratio_threshold": 0.5,
        }
    )
    assert cfg.min_kernel_sources == 5 and cfg.kernel.spatial_kernel_order == 0
    assert cfg.kernel.spatial_bg_order == 1 and cfg.bad_subtraction_ratio_threshold == 0.5
    assert core_path("detectionThresholdMax") == "detection_threshold_max"
    with pytest.raises(InvalidInputError, match="min_kernel_sources"):
        SubtractionConfig().replace(min_kernel_source=3)
    with pytest.raises(InvalidInputError, match="Unknown configuration field"):
        file_config({"noSuchField": 1})


def test_numbers_are_traced_and_never_recompile():
    """Changing a clipping limit or λ re-runs the compiled fit; changing an order compiles."""
    assert set(NUMBER_FIELDS) <= {f.name for f in dataclasses.fields(KernelFitConfig)}
    leaves, treedef = jax.tree_util.tree_flatten(KernelFitConfig())
    assert len(leaves) == len(NUMBER_FIELDS)
    sci, tmpl = scene_pair(2.4, 2.0)
    sigmas, config = basis_for(2.0, 2.4)
    cands = candidates_for(sci)
    t, s = masked(tmpl, crop=20), masked(sci)
    sig, bbox = prepare_fit_arguments(
        t.image, s.image, t.variance, s.variance, cands, config, sigmas, None, True
    )
    args = (t.image, s.image, t.variance, s.variance, cands, sig, bbox)
    fit_kernel_jit(*args, config=config)
    before = fit_kernel_jit._cache_size()
    sums = []
    for value in (3.0, 2.0, 1.5):
        sol = fit_kernel_jit(*args, config=config.replace(max_ksum_sigma=value))
        sums.append(int(np.sum(np.asarray(sol.used))))
    assert fit_kernel_jit._cache_size() == before
    fit_kernel_jit(*args, config=config.replace(spatial_kernel_order=0))
    assert fit_kernel_jit._cache_size() == before + 1
    assert sums[0] >= sums[-1]  # a tighter clip rejects at least as many


def test_singular_system_is_refitted_constant_on_every_path(monkeypatch):
    """A singular spatial fit is repeated once with constant orders, and reported."""
    real = al.subtract_and_decorrelate
    calls = []

    def singular_unless_constant(*args, **kwargs):
        config = args[3]
        calls.append((config.spatial_kernel_order, config.spatial_bg_order))
        out = real(*args, **kwargs)
        if (config.spatial_kernel_order, config.spatial_bg_order) != (0, 0):
            solution = out.solution
            out = out._replace(solution=solution._replace(status=solution.status | st.SINGULAR))
        return out

    monkeypatch.setattr(al, "subtract_and_decorrelate", singular_unless_constant)
    from test_alard_lupton import BASE, catalogue, detected, psf

    from jaxdiffim.testing.synthetic import make_test_image

    sci = make_test_image(psf_sigma=2.4, noise_level=1.0, noise_seed=6, n_src=80)
    tmpl = make_test_image(psf_sigma=2.0, noise_level=1.0, noise_seed=7, n_src=80)
    res = al.alard_lupton_subtract(
        detected(tmpl), detected(sci), psf(2.0), psf(2.4), catalogue(sci), BASE
    )
    assert calls == [(1, 2), (0, 0)]
    assert res.metrics["spatialOrderReduced"] == "singular spatial system"
    assert (res.metrics["spatialKernelOrder"], res.metrics["spatialBgOrder"]) == (0, 0)
    assert res.kernel_config.spatial_kernel_order == 0
