"""Contrast transfer function in the RELION / CTFFIND convention (SCIENCE.md §2), pure JAX.

Sign: ``CTF_RELION(0) = +A > 0`` and positive up to the first zero for underfocus, because
RELION particles are contrast-inverted (protein white). The physical bright-field CTF is the
negative of this one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from atomicspi_bayes.physics._fastmath import fast_exp, fast_sin

__all__ = ["CTFParams", "ctf", "electron_wavelength", "interaction_constant"]

# CODATA 2018 (exact SI values where defined)
_H = 6.62607015e-34  # J s
_E = 1.602176634e-19  # C
_M0 = 9.1093837015e-31  # kg
_C = 299792458.0  # m / s
_M0C2_EV = _M0 * _C**2 / _E  # electron rest energy, eV (510998.95)


class CTFParams(NamedTuple):
    """CTF parameters, one entry per image (leaves are arrays of a common batch shape or scalars).

    Fields (units):
        defocus_u: defocus along the U axis in Å, positive = underfocus (rlnDefocusU).
        defocus_v: defocus along V in Å (rlnDefocusV); dU >= dV is NOT required.
        defocus_angle: azimuth of U from +x, counter-clockwise, in radians (rlnDefocusAngle).
        voltage_kv: acceleration voltage in kV (rlnVoltage).
        cs_mm: spherical aberration in mm (rlnSphericalAberration).
        amplitude_contrast: amplitude contrast ratio A, 0 <= A < 1 (rlnAmplitudeContrast).
        phase_shift: additional phase shift in radians (rlnPhaseShift, degrees in STAR).
        bfactor: CTF envelope B in Å², multiplies by exp(-B k²/4) (rlnCtfBfactor).
        scale: overall scale factor (rlnCtfScalefactor).
    """

    defocus_u: Array
    defocus_v: Array
    defocus_angle: Array
    voltage_kv: Array
    cs_mm: Array
    amplitude_contrast: Array
    phase_shift: Array
    bfactor: Array
    scale: Array

    @classmethod
    def create(
        cls,
        defocus_u: Array | float,
        defocus_v: Array | float | None = None,
        defocus_angle: Array | float = 0.0,
        voltage_kv: Array | float = 300.0,
        cs_mm: Array | float = 2.7,
        amplitude_contrast: Array | float = 0.1,
        phase_shift: Array | float = 0.0,
        bfactor: Array | float = 0.0,
        scale: Array | float = 1.0,
    ) -> CTFParams:
        """Build float32 params, broadcasting every field to the common batch shape.

        ``defocus_v`` defaults to ``defocus_u`` (no astigmatism).
        """
        if defocus_v is None:
            defocus_v = defocus_u
        fields = [defocus_u, defocus_v, defocus_angle, voltage_kv, cs_mm, amplitude_contrast,
                  phase_shift, bfactor, scale]  # fmt: skip
        arrays = [jnp.asarray(f, dtype=jnp.float32) for f in fields]
        shape = jnp.broadcast_shapes(*(x.shape for x in arrays))
        return cls(*(jnp.broadcast_to(x, shape) for x in arrays))

    @classmethod
    def from_metadata(cls, metadata, indices: np.ndarray | None = None) -> CTFParams:
        """Params of particles ``indices`` (all if None) of an ``io.ParticleMetadata``."""
        sel = slice(None) if indices is None else np.asarray(indices)
        m = metadata
        return cls.create(
            m.defocus_u[sel], m.defocus_v[sel], m.defocus_angle[sel], m.voltage_kv[sel],
            m.cs_mm[sel], m.amplitude_contrast[sel], m.phase_shift[sel], m.ctf_bfactor[sel],
            m.ctf_scale[sel],
        )  # fmt: skip


@jax.jit
def electron_wavelength(voltage_kv: Array | float) -> Array:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV.

    λ = h / sqrt(2 m0 e V (1 + eV / 2 m0 c²)); 300 kV -> 0.019687 Å.
    """
    v = jnp.asarray(voltage_kv, dtype=jnp.float32) * 1e3
    # h / sqrt(2 m0 e) in Å·V^½ = 12.2643
    k = _H / np.sqrt(2.0 * _M0 * _E) * 1e10
    return k / jnp.sqrt(v * (1.0 + v / (2.0 * _M0C2_EV)))


@jax.jit
def interaction_constant(voltage_kv: Array | float) -> Array:
    """Interaction constant σ_e in rad V⁻¹ Å⁻¹ (phase = σ_e × projected potential in V·Å).

    σ_e = (2π / λV) (m0c² + eV) / (2 m0c² + eV); 300 kV -> 6.526e-4.
    """
    v = jnp.asarray(voltage_kv, dtype=jnp.float32) * 1e3
    lam = electron_wavelength(voltage_kv)
    return (2.0 * jnp.pi / (lam * v)) * (_M0C2_EV + v) / (2.0 * _M0C2_EV + v)


@jax.jit
def ctf(freqs: Array, params: CTFParams) -> Array:
    """RELION CTF on a frequency grid.

    Args:
        freqs: ``(..., 2)`` spatial frequencies ``(kx, ky)`` in Å⁻¹ (k = 1/d).
        params: :class:`CTFParams` with scalar leaves, or leaves of a batch shape ``S`` that
            broadcasts against ``freqs.shape[:-1]`` (e.g. ``(B, 1, 1)`` against ``(L, L//2+1)``).

    Returns:
        ``(...)`` float32: ``[sqrt(1-A²) sin χ + A cos χ] · exp(-B k²/4) · scale`` with
        ``χ = π λ Δz(θ) k² - (π/2) Cs λ³ k⁴ + φ`` and
        ``Δz(θ) = ½[(dU+dV) + (dU-dV) cos 2(θ - θ_a)]``, ``θ = atan2(ky, kx)``.
    """
    kx, ky = freqs[..., 0], freqs[..., 1]
    k2 = kx * kx + ky * ky
    # cos 2(θ - θa) without atan2: cos2θ = (kx² - ky²)/k², sin2θ = 2 kx ky / k²
    safe = jnp.where(k2 > 0, k2, 1.0)
    cos2t = jnp.where(k2 > 0, (kx * kx - ky * ky) / safe, 1.0)
    sin2t = jnp.where(k2 > 0, 2.0 * kx * ky / safe, 0.0)
    ang = jnp.asarray(params.defocus_angle)
    cos2d = cos2t * jnp.cos(2.0 * ang) + sin2t * jnp.sin(2.0 * ang)
    lam = electron_wavelength(params.voltage_kv)
    cs = jnp.asarray(params.cs_mm) * 1e7  # mm -> Å
    du, dv = jnp.asarray(params.defocus_u), jnp.asarray(params.defocus_v)
    dz = 0.5 * ((du + dv) + (du - dv) * cos2d)
    chi = jnp.pi * lam * dz * k2 - 0.5 * jnp.pi * cs * lam**3 * k2 * k2 + params.phase_shift
    amp = jnp.asarray(params.amplitude_contrast)
    # sqrt(1-A²) sin χ + A cos χ = sin(χ + atan2(A, sqrt(1-A²)))
    value = fast_sin(chi + jnp.arctan2(amp, jnp.sqrt(1.0 - amp * amp)))
    return value * fast_exp(-0.25 * params.bfactor * k2) * params.scale
