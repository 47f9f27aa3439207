"""Delta-function regularisation and per-pixel weighting against independent numpy solves."""

import jax
import numpy as np
import pytest

from jaxdiffim import KernelFitConfig, alard_lupton_basis, regularization_matrix
from jaxdiffim.core.single_stamp import fit_single_stamp
from jaxdiffim.testing.synthetic import plant_stars


def stamps(k, seed=0):
    """A noisy star pair on a (2k+1)² stamp: template sigma 1.3, science sigma 1.8, ratio 1.2."""
    size = 2 * k + 1
    rng = np.random.default_rng(seed)
    pos = [size / 2 - 0.3], [size / 2 + 0.2]
    t = plant_stars((size, size), *pos, [400.0], 1.3) + rng.normal(0, 0.5, (size, size))
    s = plant_stars((size, size), *pos, [480.0], 1.8) + rng.normal(0, 0.5, (size, size))
    vt = np.full((size, size), 0.25) + rng.uniform(0, 0.05, (size, size))
    vs = np.full((size, size), 0.25) + rng.uniform(0, 0.05, (size, size))
    return t, s, vt, vs


def numpy_normal_equations(t, s, vt, vs, k, constant_weight=True):
    """ip_diffim's M = Cᵀ W C, b = Cᵀ W y for a delta basis plus background, built directly."""
    n = t.shape[0] - k + 1
    cols = [t[v : v + n, u : u + n].ravel() for v in range(k) for u in range(k)]
    c = np.stack([*cols, np.ones(n * n)], axis=1)
    y = s[k // 2 : k // 2 + n, k // 2 : k // 2 + n].ravel()
    if constant_weight:
        w = np.full(n * n, 1.0 / np.median(vt + vs))
    else:
        w = 1.0 / (vt + vs)[k // 2 : k // 2 + n, k // 2 : k // 2 + n].ravel()
    return c.T @ (w[:, None] * c), c.T @ (w * y)


@pytest.mark.parametrize(
    ("reg_type", "extra"),
    [
        ("centralDifference", {"central_regularization_stencil": 9}),
        ("centralDifference", {"central_regularization_stencil": 5}),
        ("forwardDifference", {"forward_regularization_orders": (1, 2)}),
    ],
)
@pytest.mark.parametrize("lambda_type", ["absolute", "relative"])
def test_regularized_solve_matches_numpy(reg_type, extra, lambda_type):
    k = 7
    t, s, vt, vs = stamps(k)
    config = KernelFitConfig(
        kernel_basis="delta-function",
        kernel_size=k,
        regularization_type=reg_type,
        lambda_type=lambda_type,
        lambda_value=0.2,
        lambda_scaling=1e-2,
        **extra,
    )
    with jax.enable_x64(True):
        coeff, kernel, ksum, bg = fit_single_stamp(t, s, vt, vs, config)
    m, b = numpy_normal_equations(t, s, vt, vs, k)
    h = regularization_matrix(
        k,
        reg_type,
        stencil=extra.get("central_regularization_stencil", 9),
        orders=extra.get("forward_regularization_orders", (1, 2)),
    )
    lam = 0.2 if lambda_type == "absolute" else np.trace(m) / np.trace(h) * 1e-2
    a = np.linalg.solve(m + lam * h, b)
    np.testing.assert_allclose(np.asarray(coeff), a[:-1], rtol=1e-8, atol=1e-10)
    assert float(bg) == pytest.approx(a[-1], rel=1e-8, abs=1e-10)
    np.testing.assert_allclose(np.asarray(kernel), a[:-1].reshape(k, k), rtol=1e-8, atol=1e-10)
    assert float(ksum) == pytest.approx(a[:-1].sum(), rel=1e-10)
    # the penalty smooths: its curvature is lower than the unregularised solution's
    free = np.linalg.solve(m, b)
    assert a[:-1] @ h[:-1, :-1] @ a[:-1] < free[:-1] @ h[:-1, :-1] @ free[:-1]


def test_per_pixel_weighting_matches_numpy():
    k = 7
    t, s, vt, vs = stamps(k, seed=3)
    config = KernelFitConfig(
        kernel_basis="delta-function",
        kernel_size=k,
        use_regularization=False,
        constant_variance_weighting=False,
    )
    with jax.enable_x64(True):
        coeff, _, _, bg = fit_single_stamp(t, s, vt, vs, config)
    m, b = numpy_normal_equations(t, s, vt, vs, k, constant_weight=False)
    a = np.linalg.solve(m, b)
    np.testing.assert_allclose(np.asarray(coeff), a[:-1], rtol=1e-8, atol=1e-10)
    assert float(bg) == pytest.approx(a[-1], rel=1e-8, abs=1e-10)


def test_separable_alard_lupton_design_matches_brute_force():
    """The AL fit (separable raw terms + renormalisation transform) equals the least-squares
    solution with design columns B_i ⊛ t computed directly from the basis images."""
    k = 11
    t, s, vt, vs = stamps(k, seed=5)
    sigmas = np.array([0.8, 1.6])
    config = KernelFitConfig(kernel_size=k, degrees=(3, 1))
    with jax.enable_x64(True):
        coeff, kernel, _, bg = fit_single_stamp(t, s, vt, vs, config, sigmas)
        basis = np.asarray(alard_lupton_basis(sigmas, (3, 1), k))
    n = t.shape[0] - k + 1
    cols = [
        sum(b[v, u] * t[v : v + n, u : u + n] for v in range(k) for u in range(k)).ravel()
        for b in basis
    ]
    c = np.stack([*cols, np.ones(n * n)], axis=1)
    y = s[k // 2 : k // 2 + n, k // 2 : k // 2 + n].ravel()
    w = 1.0 / np.median(vt + vs)
    a = np.linalg.solve(w * c.T @ c, w * c.T @ y)
    np.testing.assert_allclose(np.asarray(coeff), a[:-1], rtol=1e-7, atol=1e-9)
    assert float(bg) == pytest.approx(a[-1], rel=1e-7, abs=1e-9)
    np.testing.assert_allclose(
        np.asarray(kernel), np.einsum("i,ivu->vu", a[:-1], basis), atol=1e-10
    )
