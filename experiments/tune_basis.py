"""Tune the kernel basis by gradient: Alard-Lupton widths or the delta-function λ, with optax.

Training pairs and independent test pairs are simulated with elliptical Moffat PSFs that vary
across the field (:func:`jaxdiffim.testing.moffat_pairs.moffat_pair`; the template has β 3.5,
the science image β 2.5 and a wider, more elliptical PSF). In every pair one kernel star in four
is held out of the fit (:func:`jaxdiffim.core.heldout.split_candidates`); the loss is the
reduced χ² of the difference on the held-out stars' stamps
(:func:`jaxdiffim.core.heldout.heldout_chi2`), averaged over the training pairs with ``vmap``;
candidate clipping is off, so the selection (a stop-gradient) stays fixed and the loss smooth.
Adam (optax) updates

* ``--what widths``: the unconstrained parameters of
  :func:`jaxdiffim.core.widths.widths_from_parameters` (positive, increasing widths), starting
  from ip_diffim's width rule for the pairs' FWHMs;
* ``--what lambda``: ``log λ`` of the regularised delta-function basis, starting from
  ip_diffim's default λ = 0.2.

It prints JSON (default and tuned parameters; the held-out χ² of every test pair, averaged
over the four held-out folds, for both; the loss curve; timings) and writes a PNG of the loss
curve and the basis before/after. Usage: ``OPENBLAS_NUM_THREADS=1 python
experiments/tune_basis.py --what widths --out /tmp/tune``. Runs with x64 off and no context
manager: the float64 fit is differentiable as it is.
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiffim import KernelFitConfig, alard_lupton_sigmas, subtract_images
from jaxdiffim.core.heldout import heldout_chi2, split_candidates
from jaxdiffim.core.widths import parameters_from_widths, widths_from_parameters
from jaxdiffim.testing.moffat_pairs import moffat_pair

#: Held-out stamp half-size (pixels) and folds.
HALF, FOLDS = 8, 4
#: No candidate clipping while tuning: the selection is a stop-gradient, and one that changes
#: between steps makes the loss jump (with clipping on, λ's loss stepped up by 0.3 % where a
#: candidate was rejected). The simulated pairs have no outliers to clip.
FIXED_SELECTION = dict(
    single_kernel_clipping=False, kernel_sum_clipping=False, spatial_kernel_clipping=False
)


def make_pairs(seeds, size, n_stars):
    """Simulated pairs stacked along a leading axis (one pytree of arrays)."""
    pairs = [moffat_pair(seed, size=size, n_stars=n_stars) for seed in seeds]
    stacked = jax.tree.map(
        lambda *a: jnp.stack([jnp.asarray(x) for x in a]),
        *[(p.template, p.science, p.candidates) for p in pairs],
    )
    fwhm = (np.mean([p.template_fwhm for p in pairs]), np.mean([p.science_fwhm for p in pairs]))
    return stacked, fwhm


def setup(what, fwhm):
    """Config, initial parameters and the map from parameters to (widths, config)."""
    if what == "widths":
        sigmas, kernel_size = alard_lupton_sigmas(fwhm[0], fwhm[1])
        config = KernelFitConfig(kernel_size=kernel_size, **FIXED_SELECTION)
        init = jnp.asarray(parameters_from_widths(sigmas), jnp.float32)
        return config, init, lambda p: (widths_from_parameters(p), config)
    config = KernelFitConfig(
        kernel_basis="delta-function", kernel_size=11, spatial_kernel_order=1, **FIXED_SELECTION
    )
    init = jnp.log(jnp.asarray([config.lambda_value], jnp.float32))
    return config, init, lambda p: (jnp.zeros(0), config.replace(lambda_value=jnp.exp(p[0])))


def make_loss(unpack):
    """The held-out χ² of one pair for one fold, and its mean over a batch of pairs (fold 0)."""

    def one(params, offset, template, science, candidates):
        sigmas, config = unpack(params)
        fit, held = split_candidates(candidates, FOLDS, offset)
        diff, _ = subtract_images(template, science, fit, config, sigmas, check=False)
        return heldout_chi2(diff.difference.image, diff.difference.variance, held, HALF)

    def loss(params, batch):
        return jnp.mean(jax.vmap(one, in_axes=(None, None, 0, 0, 0))(params, 0, *batch))

    return loss, one


def evaluate(one, params, batch):
    """Held-out χ² of every pair, averaged over the folds (numpy, shape (n_pairs,))."""
    pairs = jax.vmap(one, in_axes=(None, None, 0, 0, 0))
    folds = jax.jit(jax.vmap(pairs, in_axes=(None, 0, None, None, None)))
    return np.mean(np.asarray(folds(params, jnp.arange(FOLDS), *batch)), axis=0)


def tune(what="widths", train=4, test=4, steps=40, size=192, n_stars=48, lr=0.05, seed=0):
    """Run the experiment; returns the JSON-able summary (and the basis before/after)."""
    t0 = time.perf_counter()
    train_batch, fwhm = make_pairs(range(seed, seed + train), size, n_stars)
    test_batch, _ = make_pairs(range(seed + 1000, seed + 1000 + test), size, n_stars)
    config, params, unpack = setup(what, fwhm)
    loss, one = make_loss(unpack)
    optimizer = optax.adam(lr)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state, batch):
        value, grad = jax.value_and_grad(loss)(params, batch)
        updates, state = optimizer.update(grad, state, params)
        return optax.apply_updates(params, updates), state, value

    default = params
    curve = []
    for _ in range(steps):
        params, state, value = step(params, state, train_batch)
        curve.append(float(value))
    curve.append(float(jax.jit(loss)(params, train_batch)))
    before, after = evaluate(one, default, test_batch), evaluate(one, params, test_batch)

    def described(p):
        sigmas, cfg = unpack(p)
        if what == "widths":
            return {"widths_px": [round(float(s), 4) for s in np.asarray(sigmas)]}
        return {"lambda": round(float(cfg.lambda_value), 5)}

    return {
        "what": what,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__}",
        "pairs": {"train": train, "test": test, "size": size, "stars": n_stars},
        "fwhm_px": [round(float(f), 3) for f in fwhm],
        "kernel_size": config.kernel_size,
        "steps": steps,
        "learning_rate": lr,
        "default": {**described(default), "test_heldout_chi2": _rounded(before)},
        "tuned": {**described(params), "test_heldout_chi2": _rounded(after)},
        # χ² - 1 is the part of the held-out residual that is mismatch rather than noise
        "test_excess_chi2_reduction": float(1.0 - np.mean(after - 1.0) / np.mean(before - 1.0)),
        "train_loss_curve": [round(v, 5) for v in curve],
        "seconds": round(time.perf_counter() - t0, 1),
    }, (unpack(default), unpack(params))


def _rounded(values):
    return [round(float(v), 4) for v in values]


def figure(summary, bases, path):
    """Loss curve and the basis before/after (Gaussian profiles, or λ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(summary["train_loss_curve"], "k-")
    left.set_xlabel("Adam step")
    left.set_ylabel("held-out reduced χ² (training pairs)")
    (s0, c0), (s1, c1) = bases
    if summary["what"] == "widths":
        r = np.linspace(-4 * float(np.max(s1)), 4 * float(np.max(s1)), 400)
        for sig, style, label in ((s0, "--", "default"), (s1, "-", "tuned")):
            for i, s in enumerate(np.asarray(sig)):
                right.plot(
                    r, np.exp(-0.5 * (r / s) ** 2), style, color=f"C{i}", label=f"{label} σ={s:.2f}"
                )
        right.set_xlabel("pixels")
        right.set_ylabel("Gaussian of the basis")
        right.legend(fontsize=7)
    else:
        right.bar(["default", "tuned"], [float(c0.lambda_value), float(c1.lambda_value)])
        right.set_ylabel("λ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=("widths", "lambda"), default="widths")
    parser.add_argument("--train", type=int, default=4)
    parser.add_argument("--test", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--stars", type=int, default=48)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)
    summary, bases = tune(
        args.what, args.train, args.test, args.steps, args.size, args.stars, args.lr
    )
    os.makedirs(args.out, exist_ok=True)
    summary["figure"] = os.path.join(args.out, f"tune_{args.what}.png")
    figure(summary, bases, summary["figure"])
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
