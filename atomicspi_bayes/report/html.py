"""One self-contained HTML report of a run: figures inline as base64 PNG, no scripts.

Every section is built from whatever the run directory holds; a part that was not run is
shown as "not run" with the command that produces it, never as a failure.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atomicspi_bayes.atomic_files import atomic_open
from atomicspi_bayes.errors import ConfigError
from atomicspi_bayes.report import plots
from atomicspi_bayes.report.artifacts import RunArtifacts, _flatten, _fmt, scan_run
from atomicspi_bayes.report.snapshots import render_snapshots

log = logging.getLogger(__name__)

#: CSV tables longer than this are summarised in one line instead of shown.
_MAX_TABLE_ROWS = 30

#: Keys that mark the centre and the edges of an interval inside a JSON object.
_MID_KEYS = ("median", "q50", "p50", "50", "mid", "estimate", "mean", "value")
_LO_KEYS = ("q05", "p05", "05", "5", "q025", "lo", "low", "lower", "ci_low")
_HI_KEYS = ("q95", "p95", "95", "q975", "hi", "high", "upper", "ci_high")


@dataclass(frozen=True)
class Section:
    """One report section.

    Attributes:
        anchor: HTML id.
        title: heading.
        body: HTML body (already escaped / built here).
        ran: ``False`` when the part was not run (body then explains how to run it).
    """

    anchor: str
    title: str
    body: str
    ran: bool


# ---- HTML building blocks ----------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _figure_html(fig, alt: str, caption: str = "") -> str:
    png = plots.figure_png(fig)
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{_img(png, alt)}{cap}</figure>"


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    head = ""
    if header:
        head = "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _not_run(what: str, how: str) -> str:
    return f'<p class="missing">Not run: {_esc(what)}. To add it: <code>{_esc(how)}</code></p>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _find_key(obj: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    lower = {str(k).lower(): k for k in obj}
    for key in keys:
        if key in lower:
            return lower[key]
    return None


def _as_interval(obj: Any) -> str | None:
    """``"m [lo, hi]"`` if ``obj`` is an interval object (a dict with centre and edges)."""
    if not isinstance(obj, dict):
        return None
    mid, lo, hi = _find_key(obj, _MID_KEYS), _find_key(obj, _LO_KEYS), _find_key(obj, _HI_KEYS)
    if mid is None or lo is None or hi is None:
        return None
    vals = (obj[mid], obj[lo], obj[hi])
    if all(v is None for v in vals):
        return "undefined"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return f"{_fmt(float(vals[0]))} [{_fmt(float(vals[1]))}, {_fmt(float(vals[2]))}]"
    if all(isinstance(v, list) for v in vals) and len({len(v) for v in vals}) == 1:
        return "; ".join(
            f"{_fmt(float(m))} [{_fmt(float(a))}, {_fmt(float(b))}]"
            for m, a, b in zip(*vals, strict=True)
        )
    return None


def _leaf(value: Any) -> str:
    if isinstance(value, list):
        arr = np.asarray(value, dtype=object)
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in arr.flat)
        if numeric and arr.ndim == 1 and arr.size <= 8:
            return "[" + ", ".join(_fmt(v) for v in arr.tolist()) + "]"
        if numeric and arr.ndim == 2 and arr.size <= 36:
            return "; ".join("[" + ", ".join(_fmt(v) for v in row) + "]" for row in arr.tolist())
        if numeric and arr.size:
            vals = np.asarray(arr, dtype=float)
            return f"{arr.shape} array, {_fmt(float(vals.min()))} … {_fmt(float(vals.max()))}"
        return ", ".join(str(v) for v in value[:12]) + (" …" if len(value) > 12 else "")
    return _fmt(value)


def _interval_keys(obj: dict[str, Any]) -> set[str]:
    """Keys of ``obj`` that make up its interval (centre, edges, and a ``mean`` beside them)."""
    keys = {_find_key(obj, k) for k in (_MID_KEYS, _LO_KEYS, _HI_KEYS)}
    if None in keys:
        return set()
    extra = _find_key(obj, ("mean",))
    return {k for k in (*keys, extra) if k is not None}


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        interval = _as_interval(value)
        if interval is not None:
            return interval
        return "; ".join(f"{k}: {_leaf(v)}" for k, v in _flatten(value).items())
    return _leaf(value)


def _records_table(items: list[dict[str, Any]], max_rows: int = 50) -> str:
    """A list of JSON objects as one table: a column per key, intervals as one cell."""
    columns: list[str] = []
    has_interval = False
    for item in items:
        skip = _interval_keys(item)
        has_interval |= bool(skip)
        for key in item:
            if key not in skip and key not in columns:
                columns.append(key)
    header = (*columns, "median [5 %, 95 %]") if has_interval else tuple(columns)
    rows = []
    for item in items[:max_rows]:
        skip = _interval_keys(item)
        row = [_cell(item[c]) if c in item and c not in skip else "" for c in columns]
        if has_interval:
            row.append(_as_interval(item) or "")
        rows.append(tuple(row))
    note = _note(f"first {max_rows} of {len(items)} rows") if len(items) > max_rows else ""
    return _table(rows, header) + note


def _json_block(data: Any, heading: str = "") -> str:
    """A JSON object as HTML: scalars and intervals in a key/value table, lists of objects
    as their own tables, nested objects as sub-blocks."""
    head = f"<h4>{_esc(heading)}</h4>" if heading else ""
    if not isinstance(data, dict):
        if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
            return head + _records_table(data)
        return head + _table([("value", _leaf(data))])
    rows: list[tuple[str, str]] = []
    blocks: list[str] = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            blocks.append(_json_block(value, str(key)))
        elif isinstance(value, dict) and _as_interval(value) is None:
            flat_ok = all(
                not isinstance(v, dict) or _as_interval(v) is not None for v in value.values()
            )
            if flat_ok and len(value) <= 3:
                rows.extend((f"{key} › {k}", _cell(v)) for k, v in value.items())
            else:
                blocks.append(_json_block(value, str(key)))
        else:
            rows.append((str(key), _cell(value)))
    table = _table(rows, ("quantity", "value (median [5 %, 95 %] where given)")) if rows else ""
    return head + table + "".join(blocks)


# ---- sections ----------------------------------------------------------------------------


def _section_dataset(art: RunArtifacts) -> Section:
    rows: list[tuple[str, str]] = []
    notes = []
    if art.dataset is not None:
        rows.extend(art.dataset.rows)
        notes.append(f"from <code>{_esc(Path(art.dataset.source).name)}</code>")
    if art.latents is not None:
        n, d = art.latents.z_mean.shape
        rows.append(("particles with latents", f"{n:,}"))
        rows.append(("latent dimensions", str(d)))
    if art.truth is not None:
        rows.append(("ground truth", f"yes ({art.truth.name})"))
        if art.truth.snr is not None:
            rows.append(("simulation SNR", _fmt(art.truth.snr)))
    if art.ensemble is not None:
        k, n_atoms, _ = art.ensemble.coords.shape
        rows.append(("ensemble", f"{k} models × {n_atoms:,} atoms"))
    body = (
        _table(rows, ("property", "value"))
        if rows
        else _not_run(
            "no particles.star or latents", "atomicspi fit PARTICLES --structure REF --out RUN"
        )
    )
    if notes:
        body += _note("Counts and optics " + ", ".join(notes) + ".")
    if art.config:
        cfg_rows = [(k, _leaf(v)) for k, v in _flatten(art.config).items()]
        body += (
            "<details><summary>Fit settings (config.toml)</summary>"
            + _table(cfg_rows, ("setting", "value"))
            + "</details>"
        )
    return Section("dataset", "Dataset", body, bool(rows))


def _section_elbo(art: RunArtifacts) -> Section:
    if art.elbo is None:
        return Section(
            "elbo",
            "Optimisation (ELBO)",
            _not_run("no elbo.npy in the run", "atomicspi fit ... --out RUN"),
            False,
        )
    fig = plots.elbo_figure(art.elbo)
    cap = (
        "Evidence lower bound per step (higher is better); the right panel zooms into the "
        "second half to show whether the fit has levelled off."
    )
    return Section("elbo", "Optimisation (ELBO)", _figure_html(fig, "ELBO trace", cap), True)


def _section_latent(art: RunArtifacts) -> Section:
    title = "Latent vs truth"
    if art.latents is None:
        return Section("latent", title, _not_run("no latents.npz", "atomicspi fit ..."), False)
    if art.truth is None:
        return Section(
            "latent",
            title,
            _not_run(
                "no ground truth (truth.npz) for this dataset",
                "only simulated sets (atomicspi simulate) carry truth.npz",
            ),
            False,
        )
    fig, rhos = plots.latent_truth_figure(
        art.latents.z_mean, art.latents.z_sd, art.truth.values, art.truth.name
    )
    rows = [(f"z{j + 1}", f"{r:+.3f}") for j, r in enumerate(rhos)]
    body = _figure_html(
        fig, "latent versus truth", "Each dot is one particle; bars are ± one posterior sd."
    )
    body += _table(rows, ("latent dimension", f"Spearman ρ vs {art.truth.name}"))
    return Section("latent", title, body, True)


def _rmsd_to_first(coords: np.ndarray) -> np.ndarray:
    diff = coords - coords[:1]
    return np.sqrt(np.mean(np.sum(diff**2, axis=-1), axis=-1))


def _section_ensemble(art: RunArtifacts) -> Section:
    title = "Ensemble snapshots"
    if art.ensemble is None:
        return Section("ensemble", title, _not_run("no ensemble.pdb", "atomicspi fit ..."), False)
    ens = art.ensemble
    elements = ens.elements if np.all(ens.elements != "") else None
    snaps = render_snapshots(ens.coords, elements)
    shown = snaps.model_index
    rmsd = _rmsd_to_first(ens.coords[shown])
    fig = plots.snapshots_figure(snaps, [ens.labels[i] for i in shown], rmsd)
    cap = (
        f"{len(shown)} of {ens.coords.shape[0]} models of <code>ensemble.pdb</code>, projected "
        "along two principal axes of the mean structure (same frame for every model) with the "
        "fit's simulator (Peng factors, no CTF, 2 Å blur); bottom row: difference to the first "
        "model (red = potential gained, blue = lost). RMSD is to the first model, without "
        "superposition."
    )
    return Section("ensemble", title, _figure_html(fig, "ensemble projections", cap), True)


def _png_figure(png: Path) -> str:
    return (
        f"<figure>{_img(png.read_bytes(), png.stem)}<figcaption>"
        f"{_esc(png.name)}</figcaption></figure>"
    )


def _section_landscape(art: RunArtifacts) -> Section:
    title = "Free-energy landscape"
    land = art.landscape
    if land is None:
        return Section(
            "landscape",
            title,
            _not_run("no landscape.npz / landscape.csv", "atomicspi landscape RUN"),
            False,
        )
    q = land.f_quantiles
    if land.dim == 1:
        fig = plots.landscape_figure(
            land.centers[0], q[1], q[0] if land.has_band else None,
            q[2] if land.has_band else None,
            f_true=land.f_true, f_aggregate=land.f_aggregate, state_labels=land.state_labels,
            band_label=land.band_label, energy_unit=land.energy_unit,
            axis_label=land.axis_labels[0],
        )  # fmt: skip
    else:
        fig = plots.landscape_2d_figure(
            land.centers, q, energy_unit=land.energy_unit, axis_labels=land.axis_labels[:2]
        )
    body = _figure_html(
        fig,
        "free-energy landscape",
        f"From <code>{_esc(Path(land.source).name)}</code>: F = −kT ln p over the latent, "
        "p the posterior over state populations (5/50/95 % quantiles); gaps are bins with "
        "too little data.",
    )
    if not land.has_band:
        body += _note("The landscape file has no band: only the median is shown.")
    if land.states is not None:
        body += "<h3>States (states.json)</h3>" + _json_block(land.states)
    return Section("landscape", title, body, True)


def _section_kinetics(art: RunArtifacts) -> Section:
    title = "Kinetics"
    if art.kinetics is None:
        return Section(
            "kinetics", title, _not_run("no kinetics.json", "atomicspi kinetics RUN"), False
        )
    body = "".join(_png_figure(png) for png in art.figures.get("kinetics", []))
    body += _json_block(art.kinetics)
    return Section("kinetics", title, body, True)


def _calibration_block(cal) -> str:
    n_tests = int(cal.ranks.shape[0]) if cal.ranks is not None else None
    verdict = cal.summary.get("passed")
    head = f"<h3>{_esc(cal.name)}"
    if isinstance(verdict, bool):
        head += (
            f' <span class="{"pass" if verdict else "fail"}">'
            f"{'passed' if verdict else 'failed'}</span>"
        )
    body = head + "</h3>"
    if "criteria" in cal.summary:
        body += _note(f"Criteria: {_esc(cal.summary['criteria'])}")
    if cal.per_coordinate:
        names = list(cal.names) or sorted({n for col in cal.per_coordinate.values() for n in col})
        cols = sorted(cal.per_coordinate, key=lambda c: c.startswith("coverage"))
        rows = [(n, *(_cell(cal.per_coordinate[c].get(n, "")) for c in cols)) for n in names]
        body += _table(rows, ("coordinate", *cols))
    figs = ""
    own_ranks = any("rank" in p.stem for p in cal.figures)
    if cal.ranks is not None and cal.n_draws and not own_ranks:
        fig = plots.rank_histogram_figure(cal.ranks, cal.n_draws, cal.names or None)
        figs += _figure_html(
            fig, "SBC rank histograms",
            "Rank of the true value among posterior draws: flat when the posterior is "
            "calibrated, ∪-shaped when over-confident, ∩-shaped when under-confident.",
        )  # fmt: skip
    figs += "".join(_png_figure(png) for png in cal.figures)
    if cal.coverage:
        figs += _figure_html(plots.coverage_figure(cal.coverage, n_tests), "interval coverage")
    body += figs
    rest = {k: v for k, v in cal.summary.items() if k not in ("passed", "criteria")}
    if rest:
        body += (
            "<details><summary>All values</summary>"
            + _table([(k, _cell(v)) for k, v in rest.items()], ("quantity", "value"))
            + "</details>"
        )
    return body


def _section_calibration(art: RunArtifacts) -> Section:
    title = "Calibration (SBC)"
    pngs = art.figures.get("calibration", [])
    if not art.calibration and not pngs:
        return Section(
            "calibration",
            title,
            _not_run("no calibration/ results", "atomicspi calibrate RUN --n 1000"),
            False,
        )
    body = "".join(_calibration_block(cal) for cal in art.calibration)
    body += "".join(_png_figure(png) for png in pngs)
    return Section("calibration", title, body, True)


def _latent_summary(art: RunArtifacts) -> str:
    """Per-dimension spread of posterior means vs typical posterior sd, from latents.npz."""
    lat = art.latents
    if lat is None:
        return ""
    rows = []
    for j in range(lat.z_mean.shape[1]):
        m = lat.z_mean[:, j]
        spread = float(np.std(m))
        row = [f"z{j + 1}", _fmt(float(np.mean(m))), _fmt(spread)]
        if lat.z_sd is not None:
            sd = lat.z_sd[:, j]
            q05, q50, q95 = np.quantile(sd, [0.05, 0.5, 0.95])
            ratio = spread / q50 if q50 > 0 else float("inf")
            row += [f"{_fmt(float(q50))} [{_fmt(float(q05))}, {_fmt(float(q95))}]", _fmt(ratio)]
        else:
            row += ["–", "–"]
        rows.append(tuple(row))
    header = (
        "latent",
        "mean of z_mean",
        "sd of z_mean",
        "posterior sd: median [5 %, 95 %]",
        "spread / median sd",
    )
    return (
        "<h3>Per-particle posteriors (latents.npz)</h3>"
        + _table(rows, header)
        + _note(
            "Spread / median sd well above 1 means particles are told apart along that "
            "latent; near 1 the latent is not resolved by the data."
        )
    )


def _section_diagnostics(art: RunArtifacts) -> Section:
    title = "Diagnostics"
    pngs = art.figures.get("diagnostics", [])
    # the diagnose command's summary.json carries the same numbers (and more)
    body = "" if "summary.json" in art.diagnostics else _latent_summary(art)
    if not art.diagnostics and not pngs:
        body += _not_run(
            "no diagnostics/ results (PPC, ESS, amortization gap)", "atomicspi diagnose RUN"
        )
        return Section("diagnostics", title, body, False)
    for name, content in art.diagnostics.items():
        body += f"<h3>{_esc(name)}</h3>"
        if isinstance(content, tuple):
            header, rows = content
            if len(rows) <= _MAX_TABLE_ROWS:
                body += _table([tuple(r) for r in rows], tuple(header))
            else:  # a per-particle table: the summary lives in the JSON files
                body += _note(
                    f"{len(rows):,} rows × {len(header)} columns ({_esc(', '.join(header))}); "
                    "a per-item table, see the file itself."
                )
        else:
            body += _json_block(content)
    body += "".join(_png_figure(png) for png in pngs)
    return Section("diagnostics", title, body, True)


def _section_files(art: RunArtifacts) -> Section:
    rows = [(name, f"{size / 1024:,.1f} KiB") for name, size in art.files]
    return Section("files", "Run files", _table(rows, ("file", "size")), True)


SECTIONS: tuple[Callable[[RunArtifacts], Section], ...] = (
    _section_dataset,
    _section_elbo,
    _section_latent,
    _section_ensemble,
    _section_landscape,
    _section_kinetics,
    _section_calibration,
    _section_diagnostics,
    _section_files,
)

_CSS = """
:root { --fg:#1d2330; --muted:#5b6472; --line:#e2e6ec; --accent:#1f5fa8; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:#fff; border-bottom:1px solid var(--line); padding:18px 0 10px; }
.wrap { max-width:1120px; margin:0 auto; padding:0 24px; }
h1 { font-size:22px; margin:0 0 4px; }
.meta { color:var(--muted); font-size:13px; }
nav { margin-top:10px; display:flex; flex-wrap:wrap; gap:6px; }
nav a { font-size:13px; text-decoration:none; color:var(--fg); border:1px solid var(--line);
  border-radius:14px; padding:2px 10px; background:#fff; }
nav a.ok::before { content:"● "; color:#2e8b57; }
nav a.off { color:var(--muted); }
nav a.off::before { content:"○ "; }
section { background:#fff; border:1px solid var(--line); border-radius:8px;
  margin:18px 0; padding:14px 20px 18px; }
h2 { font-size:18px; margin:4px 0 12px; }
h2 .badge { font-size:11px; font-weight:600; vertical-align:middle; margin-left:8px;
  padding:1px 8px; border-radius:10px; background:#eef0f3; color:var(--muted); }
h3 { font-size:15px; margin:16px 0 6px; }
figure { margin:8px 0 14px; }
figure img { max-width:100%; height:auto; display:block; }
figcaption, .note { color:var(--muted); font-size:13px; margin-top:4px; }
.missing { color:var(--muted); font-style:italic; }
.pass, .fail { font-size:12px; font-weight:600; padding:1px 8px; border-radius:10px; }
.pass { background:#e3f4ea; color:#1e7a46; }
.fail { background:#fbe5e3; color:#a5281b; }
h4 { font-size:13.5px; margin:12px 0 4px; color:var(--muted); }
table { border-collapse:collapse; font-size:13px; margin:6px 0 10px; min-width:40%; }
th, td { border-bottom:1px solid var(--line); padding:4px 12px 4px 0; text-align:left;
  vertical-align:top; }
th { font-weight:600; color:var(--muted); }
tbody tr:nth-child(even) td { background:#fafbfc; }
td:last-child { font-variant-numeric: tabular-nums; }
code { background:#eef0f3; border-radius:4px; padding:0 4px; font-size:12.5px; }
details summary { cursor:pointer; color:var(--accent); font-size:13px; margin-top:6px; }
footer { color:var(--muted); font-size:12px; padding:10px 0 30px; }
"""


def render_report(artifacts: RunArtifacts) -> str:
    """The report of a scanned run as one HTML string (self-contained, no scripts)."""
    from atomicspi_bayes import __version__

    sections = [build(artifacts) for build in SECTIONS]
    nav = "".join(
        f'<a class="{"ok" if s.ran else "off"}" href="#{s.anchor}">{_esc(s.title)}</a>'
        for s in sections
    )
    parts = []
    for s in sections:
        badge = "" if s.ran else '<span class="badge">not run</span>'
        parts.append(f'<section id="{s.anchor}"><h2>{_esc(s.title)}{badge}</h2>{s.body}</section>')
    missing = [s.title for s in sections if not s.ran]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    run_name = artifacts.run_dir.resolve().name
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>atomicspi report: {_esc(run_name)}</title><style>{_CSS}</style></head><body>"
        f'<header><div class="wrap"><h1>atomicspi report: {_esc(run_name)}</h1>'
        f'<div class="meta">{_esc(artifacts.run_dir.resolve())} · generated {stamp} · '
        f"atomicspi-bayes {_esc(__version__)}"
        + (f" · not run: {_esc(', '.join(missing))}" if missing else "")
        + f"</div><nav>{nav}</nav></div></header>"
        f'<main class="wrap">{"".join(parts)}</main>'
        '<footer class="wrap">Self-contained report: every figure is embedded; no network '
        "access, no scripts.</footer></body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of a run, atomically (temp file + rename).

    Args:
        run_dir: folder written by ``atomicspi fit`` (plus any landscape/, kinetics/,
            calibration/, diagnostics/ folders written by later commands).
        out: output path; default ``run_dir/report.html``.

    Returns:
        The path of the written report.

    Raises:
        InputFormatError: no fit output in ``run_dir``, or a present file is unreadable.
        ConfigError: the folder of ``out`` does not exist.
    """
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    artifacts = scan_run(run_dir)
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: folder {out.parent} does not exist; create it or change --out")
    text = render_report(artifacts)
    with atomic_open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    log.info("wrote %s (%.1f KiB)", out, out.stat().st_size / 1024)
    return out
