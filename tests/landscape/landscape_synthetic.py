"""Shared synthetic latents for landscape tests: a known double well on a 1-D path."""

import itertools

import numpy as np

BARRIER = 3.0  # kT


def double_well(x):
    """F(x) = 3 (x^2 - 1)^2 in kT: minima at x = +-1, barrier 3 kT at x = 0."""
    return BARRIER * (x**2 - 1.0) ** 2


def sample_double_well(rng, n, sd_range=(0.05, 0.1)):
    """True latents x ~ exp(-F), posterior sd ~ U(sd_range), noisy posterior mean x + sd*eps."""
    xf = np.linspace(-2.5, 2.5, 200001)
    cdf = np.cumsum(np.exp(-double_well(xf)))
    cdf /= cdf[-1]
    x = np.interp(rng.random(n), cdf, xf)
    sd = rng.uniform(*sd_range, n)
    return x, x + sd * rng.standard_normal(n), sd


def bin_average_free_energy(edges, f=double_well):
    """-ln of the bin-averaged exp(-F) over each bin, shifted to min 0 (the estimand)."""
    out = []
    for a, b in itertools.pairwise(edges):
        x = np.linspace(a, b, 401)
        out.append(-np.log(np.trapezoid(np.exp(-f(x)), x) / (b - a)))
    out = np.asarray(out)
    return out - out.min()
