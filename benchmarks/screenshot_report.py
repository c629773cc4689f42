"""Open a report in headless Chromium, save a screenshot, print one JSON line.

Usage:
    python benchmarks/screenshot_report.py RUN_OR_REPORT_HTML [--out OUT.png]
    python benchmarks/screenshot_report.py --synthetic [--out OUT.png]

With ``--synthetic`` a fake run (tests/report/report_fake_run.py: real AdK structures,
synthetic latents and results) is written to a temporary folder and reported first. A RUN
folder without report.html gets one (``write_report``). Chromium comes from the Debian
package (``apt-get install -y chromium`` when /usr/bin/chromium is missing; needs root).

Prints: {"name": "report_screenshot", "html": ..., "png": ..., "png_bytes": ...,
"width": ..., "height": ..., "non_blank_fraction": ..., "html_bytes": ..., "render_s": ...}
where non_blank_fraction is the fraction of pixels that differ from the page background.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from atomicspi_bayes.report import write_report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        sys.exit("chromium missing and no apt-get; install Chromium and retry")
    subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, stdout=subprocess.DEVNULL)
    return CHROMIUM


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400) -> float:
    """Render ``html`` with headless Chromium into ``png``; returns seconds taken."""
    exe = ensure_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        t0 = time.perf_counter()
        subprocess.run(
            cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120
        )
        return time.perf_counter() - t0


def non_blank_fraction(png: Path) -> tuple[float, int, int]:
    """Fraction of pixels that differ from the most common (background) colour."""
    img = imread(png)[..., :3]
    flat = (np.round(img * 255).astype(np.int32) @ np.array([65536, 256, 1])).ravel()
    values, counts = np.unique(flat, return_counts=True)
    background = values[np.argmax(counts)]
    return float(np.mean(flat != background)), img.shape[1], img.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", help="RUN folder or report.html")
    parser.add_argument("--synthetic", action="store_true", help="report a fake run")
    parser.add_argument("--out", type=Path, default=None, help="screenshot path (.png)")
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    if args.synthetic:
        sys.path.insert(0, str(REPO / "tests" / "report"))
        from report_fake_run import write_fake_run

        run = write_fake_run(Path(tempfile.mkdtemp(prefix="atomicspi-fake-run-")))
        html = write_report(run)
    elif args.target:
        target = Path(args.target)
        html = target if target.suffix == ".html" else target / "report.html"
        if not html.exists():
            html = write_report(target)
    else:
        parser.error("give RUN or --synthetic")
    png = args.out or html.with_suffix(".png")
    seconds = screenshot(html, png, height=args.height)
    frac, width, height = non_blank_fraction(png)
    print(
        json.dumps(
            {
                "name": "report_screenshot",
                "html": str(html),
                "html_bytes": html.stat().st_size,
                "png": str(png),
                "png_bytes": png.stat().st_size,
                "width": width,
                "height": height,
                "non_blank_fraction": round(frac, 4),
                "render_s": round(seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
