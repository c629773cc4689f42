"""cryojax 0.6 as an independent reference renderer (shared by physics and synthetic tests).

Conventions mapped to ours (SCIENCE.md; checked empirically and in cryojax's source):
- pose: cryojax Euler angles are RELION's negated (``EulerAnglePose`` docstring); its offsets
  are the particle's displacement, i.e. minus the RELION origin;
- CTF: ``AstigmaticCTF`` takes the mean defocus (dU+dV)/2 and dU-dV, and measures the
  astigmatism azimuth from +ky (``cartesian_to_polar`` uses atan2(kx, ky)), so
  cryojax angle = 90° - rlnDefocusAngle;
- sign: cryojax returns the physical contrast (protein dark), i.e. -CTF_RELION: negate.
- rendering: cryojax integrates each real-space Gaussian over the pixel, which aliases the
  sharp atomic cores at coarse pixels; ``upsample`` renders on a finer grid and Fourier-crops
  (the alias-free limit our analytic Fourier sampling computes directly).
"""

from __future__ import annotations

import equinox as eqx
import gemmi
import jax.numpy as jnp
import numpy as np


def atomic_numbers(elements) -> np.ndarray:
    return np.array([gemmi.Element(str(e)).atomic_number for e in elements], dtype=np.int64)


def fourier_crop(images: np.ndarray, box: int) -> np.ndarray:
    """Band-limit ``(..., n, n)`` images (origin at n//2) to ``(..., box, box)`` (origin box//2)."""
    n = images.shape[-1]
    f = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=(-2, -1))), axes=(-2, -1))
    lo = n // 2 - box // 2
    f = f[..., lo : lo + box, lo : lo + box] * (box / n) ** 2
    return np.real(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(f, axes=(-2, -1))), axes=(-2, -1)))


class CryojaxRenderer:
    """Render RELION-convention particles of fixed atoms with cryojax (RELION sign)."""

    def __init__(
        self, coords, elements, box, pixel_size, voltage_kv=300.0, b_factor=0.0, upsample=1
    ):
        import cryojax.simulator as cxs
        from cryojax.constants import PengScatteringFactorParameters

        self.cxs = cxs
        self.box, self.upsample = int(box), int(upsample)
        self.volume = cxs.GaussianMixtureVolume.from_tabulated_parameters(
            jnp.asarray(coords, jnp.float32),
            PengScatteringFactorParameters(atomic_numbers(elements)),
            extra_b_factors=float(b_factor) if b_factor else None,
        )
        n = self.box * self.upsample
        self.config = cxs.BasicImageConfig((n, n), pixel_size / self.upsample, voltage_kv)
        self._render = eqx.filter_jit(self._render_impl)

    def _render_impl(self, volume, config, euler_deg, shift, du, dv, angle_deg, cs, amp, phase_deg):
        cxs = self.cxs
        pose = cxs.EulerAnglePose(
            offset_x_in_angstroms=-shift[0], offset_y_in_angstroms=-shift[1],
            phi_angle=-euler_deg[0], theta_angle=-euler_deg[1], psi_angle=-euler_deg[2],
        )  # fmt: skip
        ctf = cxs.AstigmaticCTF(
            defocus_in_angstroms=0.5 * (du + dv), astigmatism_in_angstroms=du - dv,
            astigmatism_angle=90.0 - angle_deg, spherical_aberration_in_mm=cs,
        )  # fmt: skip
        theory = cxs.ContrastTransferTheory(
            ctf, amplitude_contrast_ratio=amp, phase_shift=phase_deg
        )
        return -cxs.make_image_model(volume, config, pose, theory).simulate()

    def __call__(self, euler_deg, shift, du, dv, angle_deg, cs=2.7, amp=0.1, phase_deg=0.0):
        """One ``(box, box)`` image; angles in degrees (RELION), shift = RELION origin in Å."""
        args = [
            jnp.asarray(x, jnp.float32)
            for x in (euler_deg, shift, du, dv, angle_deg, cs, amp, phase_deg)
        ]
        img = np.asarray(self._render(self.volume, self.config, *args), dtype=np.float64)
        return fourier_crop(img, self.box) if self.upsample > 1 else img


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])
