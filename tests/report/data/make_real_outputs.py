"""Regenerate tests/report/data/real_outputs/ with the real landscape and kinetics writers.

    python tests/report/data/make_real_outputs.py

Latents: 300 particles on a 1-D double well (tests/report/report_fake_run.py), then
``landscape_from_run`` (small NUTS) and ``kinetics_from_landscape``, written into the run
folder itself (the writers' default). The report tests read these files to stay in step
with the formats those commands really write; rerun this after a format change there.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    from report_fake_run import write_fake_run

    from atomicspi_bayes.kinetics import kinetics_from_landscape
    from atomicspi_bayes.landscape import LandscapeConfig, landscape_from_run

    run = Path(tempfile.mkdtemp(prefix="report-real-outputs-"))
    write_fake_run(run, ("latents",), n_total=300, n_fit=300)
    lat = dict(np.load(run / "latents.npz"))
    np.savez(
        run / "latents.npz",
        z_mean=lat["z_mean"][:, :1],
        z_sd=lat["z_sd"][:, :1],
        particle_index=lat["particle_index"],
    )
    cfg = LandscapeConfig(
        n_grid=24, num_warmup=150, num_samples=100, num_chains=1, n_bootstrap=50, seed=0
    )
    landscape_from_run(run, None, cfg)
    kinetics_from_landscape(run / "landscape.npz", run)
    out = HERE / "real_outputs"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name in ("landscape.npz", "landscape.csv", "states.json", "kinetics.json"):
        shutil.copy(run / name, out / name)
    shutil.rmtree(run)
    print(out, sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
