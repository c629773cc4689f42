"""Structures: PDB / mmCIF / MD trajectories into :class:`AtomicModel`; multi-model PDB out.

Topology, residues, chains and covalent bonds come from ``mdtraj``; coordinates, atom names,
B-factors and element columns are read from the file itself (PDB columns, SCIENCE.md §5, or
gemmi for mmCIF), because mdtraj drops B-factors and *guesses* missing elements from atom
names (CHARMM ``CA`` -> calcium, ``CD`` -> cadmium, ``HG1`` -> mercury).

Element rule (never a bare name guess):

1. a topology file (PSF, prmtop, ...) when given;
2. the file's element column (PDB cols 77-78, mmCIF ``type_symbol``);
3. for standard residues (amino acids incl. CHARMM/AMBER variants, nucleotides, water):
   the first letter of the atom name (these residues hold only C, N, O, S, P, H; ``SE`` in
   MSE is selenium); single-atom ion residues (``CA``, ``ZN``, ``SOD``, ``CLA``...) by
   residue name;
4. other residues: the PDB name alignment (element right-justified in cols 13-14), and an
   :class:`InputFormatError` when that gives no valid element.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from atomicspi_bayes.atomic_files import atomic_open
from atomicspi_bayes.errors import InputFormatError
from atomicspi_bayes.io._errors import one_line
from atomicspi_bayes.structure.atomic_model import AtomicModel

__all__ = ["load_structure", "load_trajectory", "write_multimodel_pdb"]

log = logging.getLogger(__name__)

_PDB_SUFFIXES = (".pdb", ".ent", ".pdb.gz", ".ent.gz")
_CIF_SUFFIXES = (".cif", ".mmcif", ".pdbx", ".cif.gz", ".mmcif.gz")

# Errors third-party parsers raise on malformed files; turned into InputFormatError at the
# single call site that hands a user's file to the parser.
_PARSER_ERRORS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    RuntimeError,
    AssertionError,
    EOFError,
    struct.error,
    UnicodeDecodeError,
)

_AMINO = {
    "ALA",
    "ARG",
    "ASN",
    "ASP",
    "CYS",
    "GLN",
    "GLU",
    "GLY",
    "HIS",
    "ILE",
    "LEU",
    "LYS",
    "MET",
    "PHE",
    "PRO",
    "SER",
    "THR",
    "TRP",
    "TYR",
    "VAL",
    "SEC",
    "PYL",
    "MSE",
    "ASX",
    "GLX",
    "UNK",
    # CHARMM / AMBER / GROMACS protonation and terminal variants
    "HSD",
    "HSE",
    "HSP",
    "HID",
    "HIE",
    "HIP",
    "HISD",
    "HISE",
    "HISH",
    "CYX",
    "CYM",
    "CYS2",
    "ASH",
    "GLH",
    "LYN",
    "LSN",
    "ASPP",
    "GLUP",
    "ARN",
    "TYM",
    "NALA",
    "NGLY",
    "NMET",
    "CALA",
    "CGLY",
    "ACE",
    "NME",
    "NMA",
    "NH2",
}
_NUCLEIC = {
    "A",
    "C",
    "G",
    "U",
    "T",
    "I",
    "DA",
    "DC",
    "DG",
    "DT",
    "DU",
    "DI",
    "ADE",
    "CYT",
    "GUA",
    "THY",
    "URA",
    "RA",
    "RC",
    "RG",
    "RU",
    "RA5",
    "RA3",
    "RC5",
    "RC3",
    "RG5",
    "RG3",
    "RU5",
    "RU3",
    "DA5",
    "DA3",
    "DC5",
    "DC3",
    "DG5",
    "DG3",
    "DT5",
    "DT3",
}
_WATER = {"HOH", "WAT", "H2O", "TIP3", "TIP", "TIP3P", "TIP4", "TIP4P", "TIP5", "SOL", "SPC", "DOD"}
_STANDARD_RESIDUES = _AMINO | _NUCLEIC | _WATER
# Elements that can occur in standard residues (first letter of the atom name).
_STANDARD_ELEMENTS = {"C", "N", "O", "S", "P", "H", "D"}
# Single-atom ion residues: residue name -> element.
_ION_RESIDUES = {
    "CA": "Ca",
    "CAL": "Ca",
    "ZN": "Zn",
    "ZN2": "Zn",
    "MG": "Mg",
    "NA": "Na",
    "SOD": "Na",
    "K": "K",
    "POT": "K",
    "CL": "Cl",
    "CLA": "Cl",
    "FE": "Fe",
    "FE2": "Fe",
    "MN": "Mn",
    "CU": "Cu",
    "CU1": "Cu",
    "CD": "Cd",
    "CD2": "Cd",
    "NI": "Ni",
    "CO": "Co",
    "CES": "Cs",
    "CS": "Cs",
    "LIT": "Li",
    "LI": "Li",
    "HG": "Hg",
    "BA": "Ba",
    "SR": "Sr",
    "RB": "Rb",
    "IOD": "I",
    "BR": "Br",
    "F": "F",
}


def _valid_element(symbol: str) -> str | None:
    """Capitalised element symbol, or None when ``symbol`` is not an element."""
    import gemmi

    symbol = symbol.strip()
    if not symbol or not symbol.isalpha() or len(symbol) > 2:
        return None
    el = gemmi.Element(symbol.capitalize())
    if el.atomic_number == 0:
        return None
    return el.name


def element_from_name(atom_name_field: str, residue_name: str) -> str | None:
    """Element of an atom from its PDB name field (cols 13-16, unstripped) and residue.

    Returns None when no rule applies (the caller raises). See the module docstring.
    """
    res = residue_name.strip().upper()
    name = atom_name_field.strip()
    if not name:
        return None
    if res in _ION_RESIDUES:  # single-atom ion residues
        return _ION_RESIDUES[res]
    if res in _STANDARD_RESIDUES:
        if res == "MSE" and name.upper() == "SE":
            return "Se"
        letters = name.lstrip("0123456789'*")
        first = letters[:1].upper()
        if first in _STANDARD_ELEMENTS:
            return "H" if first == "D" and res not in _WATER else first
        return None
    # Non-standard residue: PDB alignment. Cols 13-14 hold the right-justified element.
    field = atom_name_field.ljust(4)[:4]
    col13, col14 = field[0], field[1]
    if col13 == " " or col13.isdigit():
        return _valid_element(col14)
    two = _valid_element(col13 + col14)
    if two is not None and len(name) <= 2:
        return two
    if two is not None:
        log.warning(
            "element of atom %r in residue %r guessed as %s from the PDB name alignment",
            name,
            res,
            two,
        )
        return two
    return _valid_element(col13)


@dataclass(frozen=True)
class _RawAtoms:
    """Per-atom columns read straight from the file (first model, first altloc)."""

    coords: np.ndarray  # (N, 3) float32 Å
    names: np.ndarray  # (N,) str, stripped
    name_fields: list[str]  # (N,) raw 4-char name fields (PDB) or names (mmCIF)
    res_names: list[str]  # (N,)
    elements: list[str]  # (N,) "" when the file has none
    b_factors: np.ndarray | None  # (N,) float32 or None


def _open_text(path: Path):
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="latin-1")
    return open(path, encoding="latin-1")


def _parse_pdb_atoms(path: Path) -> _RawAtoms:
    """Column-parse ATOM/HETATM of the first model, keeping the first altloc of each atom."""
    coords, names, fields, res_names, elements, bfac = [], [], [], [], [], []
    seen: set[tuple] = set()
    has_b = True
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            rec = line[:6]
            if rec.startswith("ENDMDL"):
                break
            if rec not in ("ATOM  ", "HETATM"):
                continue
            line = line.rstrip("\r\n")
            field = line[12:16]
            key = (line[21:22], line[22:27], line[17:21], field)  # chain, resSeq+iCode, res, name
            if line[16:17] not in ("", " "):
                if key in seen:  # alternate location of an atom already read
                    continue
                seen.add(key)
            try:
                xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            except ValueError as exc:
                raise InputFormatError(
                    f"{path}: line {lineno}: coordinates in columns 31-54 are not numbers "
                    f"({line[30:54]!r}); fix the PDB file"
                ) from exc
            b_text = line[60:66].strip()
            try:
                b = float(b_text) if b_text else np.nan
            except ValueError:
                b = np.nan
            if not b_text:
                has_b = False
            coords.append(xyz)
            names.append(field.strip())
            fields.append(field)
            res_names.append(line[17:21].strip())
            elements.append(line[76:78].strip() if len(line) >= 77 else "")
            bfac.append(b)
    if not coords:
        raise InputFormatError(f"{path}: no ATOM/HETATM records; not a PDB coordinate file")
    b_arr = np.asarray(bfac, dtype=np.float32)
    b_factors = b_arr if has_b and np.all(np.isfinite(b_arr)) else None
    return _RawAtoms(
        coords=np.asarray(coords, dtype=np.float32),
        names=np.asarray(names, dtype=str),
        name_fields=fields,
        res_names=res_names,
        elements=elements,
        b_factors=b_factors,
    )


def _parse_cif_atoms(path: Path) -> _RawAtoms:
    """First model of an mmCIF via gemmi, first altloc of each atom, file order."""
    import gemmi

    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, IndexError) as exc:  # IndexError: an empty file
        raise InputFormatError(
            f"{path}: unreadable mmCIF ({one_line(exc)}); check the file"
        ) from exc
    if len(st) == 0:
        raise InputFormatError(f"{path}: no models in the mmCIF file")
    coords, names, res_names, elements, bfac = [], [], [], [], []
    for chain in st[0]:
        for res in chain:
            seen: set[str] = set()
            for atom in res:
                if atom.name in seen:
                    continue
                seen.add(atom.name)
                coords.append((atom.pos.x, atom.pos.y, atom.pos.z))
                names.append(atom.name)
                res_names.append(res.name)
                el = atom.element.name
                elements.append("" if el == "X" else el)
                bfac.append(atom.b_iso)
    if not coords:
        raise InputFormatError(f"{path}: no atoms in the mmCIF file")
    return _RawAtoms(
        coords=np.asarray(coords, dtype=np.float32),
        names=np.asarray(names, dtype=str),
        name_fields=list(names),
        res_names=res_names,
        elements=elements,
        b_factors=np.asarray(bfac, dtype=np.float32),
    )


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in _PDB_SUFFIXES + _CIF_SUFFIXES:
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


@contextlib.contextmanager
def _c_stdout_to_log(path: Path):
    """Send what C extensions print on file descriptor 1 meanwhile (mdtraj's DCD plugin
    prints ``dcdplugin) ...`` lines with printf) to the debug log, so that stdout stays
    the command's own output (``--json``, benchmark JSON lines)."""
    import ctypes

    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all: nothing to protect
        yield
        return
    try:
        libc_fflush = ctypes.CDLL(None).fflush
    except (OSError, AttributeError):  # no C library to flush: restore only
        libc_fflush = None
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stdout.flush()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            if libc_fflush is not None:
                libc_fflush(None)  # C stdio buffers go to the sink, not to the real stdout
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            text = sink.read(4096).decode("utf-8", errors="replace")
            if text.strip():
                log.debug("%s: the reader printed: %s", path, " ".join(text.split()))


def _mdtraj_errors() -> tuple[type[Exception], ...]:
    """mdtraj's own parser exceptions (PSF, PDBx/mmCIF), which derive from Exception only."""
    from mdtraj.formats import psf
    from mdtraj.formats.pdbx import PdbxReader

    found = [
        getattr(psf, "PSFError", None),
        getattr(psf, "_PSFEOF", None),
        getattr(PdbxReader, "PdbxError", None),
        getattr(PdbxReader, "SyntaxError", None),
    ]
    return tuple(e for e in found if isinstance(e, type) and issubclass(e, Exception))


def _mdtraj_read(path: Path, what: str, read):
    """``read()`` (an mdtraj call on ``path``) quietly; its failures as one line."""
    parser_errors = _PARSER_ERRORS + _mdtraj_errors()
    try:
        with (
            warnings.catch_warnings(),  # its guesses about malformed lines are not ours to print
            _c_stdout_to_log(path),
        ):
            warnings.simplefilter("ignore")
            return read()
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot read {what}({one_line(exc)})") from exc
    except parser_errors as exc:
        raise InputFormatError(
            f"{path}: unreadable {what or 'by mdtraj '}({type(exc).__name__}: {one_line(exc)}); "
            "check the file"
        ) from exc


def _md_load(path: Path, **kwargs):
    import mdtraj as md

    return _mdtraj_read(path, "", lambda: md.load(str(path), **kwargs))


def _md_topology(path: Path):
    import mdtraj as md

    if _suffix(path) in _PDB_SUFFIXES + _CIF_SUFFIXES:
        return _mdtraj_read(path, "topology ", lambda: md.load(str(path)).topology)
    return _mdtraj_read(path, "topology ", lambda: md.load_topology(str(path)))


def _require_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputFormatError(f"{p}: {what} file not found")
    return p


def _topology_elements(top, path: Path) -> np.ndarray:
    out = []
    for atom in top.atoms:
        el = atom.element
        sym = None if el is None else _valid_element(el.symbol)
        if sym is None:
            raise InputFormatError(
                f"{path}: atom {atom.index} ({atom.name}) has no element in the topology"
            )
        out.append(sym)
    return np.asarray(out, dtype=str)


def _bonds(top) -> np.ndarray:
    if top.n_bonds == 0:
        top.create_standard_bonds()
    pairs = np.array([[a.index, b.index] for a, b in top.bonds], dtype=np.int64).reshape(-1, 2)
    pairs = np.sort(pairs, axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def _residues_and_chains(top):
    residue_index = np.fromiter((a.residue.index for a in top.atoms), np.int64, top.n_atoms)
    residues = list(top.residues)
    residue_names = np.asarray([r.name for r in residues], dtype=str)
    residue_ids = np.asarray([r.resSeq for r in residues], dtype=np.int64)
    chain_index = np.asarray([r.chain.index for r in residues], dtype=np.int64)
    chain_ids = []
    for chain in top.chains:
        cid = (chain.chain_id or "").strip()
        if not cid and chain.n_residues:
            cid = (getattr(chain.residue(0), "segment_id", "") or "").strip()
        chain_ids.append(cid)
    return residue_index, residue_names, residue_ids, chain_index, np.asarray(chain_ids, str)


def _elements_from_raw(raw: _RawAtoms, path: Path) -> np.ndarray:
    out = []
    for i, (col, field, res) in enumerate(
        zip(raw.elements, raw.name_fields, raw.res_names, strict=True)
    ):
        sym = _valid_element(col) if col else None
        if sym is None:
            sym = element_from_name(field, res)
        if sym is None:
            raise InputFormatError(
                f"{path}: cannot tell the element of atom {i + 1} ({field.strip()!r} in "
                f"residue {res!r}): no element column (cols 77-78); add elements or pass a "
                "topology file (e.g. PSF)"
            )
        out.append(sym)
    return np.asarray(out, dtype=str)


def load_structure(
    path: str | os.PathLike, topology: str | os.PathLike | None = None
) -> AtomicModel:
    """Read a PDB or mmCIF file (first model, first altloc) into an :class:`AtomicModel`.

    Args:
        path: ``.pdb``/``.ent`` (optionally ``.gz``) or ``.cif``/``.mmcif``/``.pdbx``.
        topology: optional topology (PSF, prmtop, PDB...) with the same atoms in the same
            order; elements and bonds are then taken from it.

    Returns:
        The model with coordinates in Å, elements (never name-guessed, see module doc),
        B-factors in Å² when the file has them, residues, chains and covalent bonds.

    Raises:
        InputFormatError: missing or unreadable file, unknown element, or a topology whose
            atoms do not match.
    """
    p = _require_file(path, "structure")
    suffix = _suffix(p)
    if suffix in _PDB_SUFFIXES:
        raw = _parse_pdb_atoms(p)
    elif suffix in _CIF_SUFFIXES:
        raw = _parse_cif_atoms(p)
    else:
        raise InputFormatError(
            f"{p}: unknown structure extension {p.suffix!r}; use .pdb, .ent, .cif or .mmcif"
        )
    traj = _md_load(p)
    top = traj.topology
    if top.n_atoms != len(raw.coords):
        raise InputFormatError(
            f"{p}: mdtraj read {top.n_atoms} atoms but the file lists {len(raw.coords)} "
            "(first model, first altloc); check for mixed models or duplicated atoms"
        )
    md_coords = traj.xyz[0] * 10.0
    if not np.allclose(md_coords, raw.coords, atol=2e-3):
        raise InputFormatError(
            f"{p}: atom order read by mdtraj differs from the file order; check the file"
        )
    if topology is not None:
        tp = _require_file(topology, "topology")
        ttop = _md_topology(tp)
        if ttop.n_atoms != top.n_atoms:
            raise InputFormatError(
                f"{tp}: topology has {ttop.n_atoms} atoms but {p} has {top.n_atoms}; "
                "pass the topology of this structure"
            )

        # Same system: same residue partition and the same leading letter of every atom
        # name (mdtraj renames some atoms differently per format, HN vs H).
        def first(name: str) -> str:
            return name.lstrip("0123456789")[:1].upper()

        tres = [r.n_atoms for r in ttop.residues]
        sres = [r.n_atoms for r in top.residues]
        if tres != sres:
            raise InputFormatError(
                f"{tp}: residues of the topology ({len(tres)}) do not match those of {p} "
                f"({len(sres)}) atom for atom; pass the topology of this structure"
            )
        tnames = [a.name for a in ttop.atoms]
        snames = [a.name for a in top.atoms]
        bad = [
            i for i, (a, b) in enumerate(zip(tnames, snames, strict=True)) if first(a) != first(b)
        ]
        if bad:
            i = bad[0]
            raise InputFormatError(
                f"{tp}: atom {i + 1} is {tnames[i]!r} in the topology but {snames[i]!r} in "
                f"{p} ({len(bad)} mismatches); files are not the same system"
            )
        elements = _topology_elements(ttop, tp)
        bond_top = ttop
    else:
        elements = _elements_from_raw(raw, p)
        bond_top = top
    residue_index, residue_names, residue_ids, chain_index, chain_ids = _residues_and_chains(top)
    return AtomicModel(
        coords=raw.coords,
        elements=elements,
        atom_names=raw.names,
        residue_index=residue_index,
        residue_names=residue_names,
        residue_ids=residue_ids,
        chain_index=chain_index,
        chain_ids=chain_ids,
        b_factors=raw.b_factors,
        bonds=_bonds(bond_top),
    )


def load_trajectory(
    traj_path: str | os.PathLike, topology_path: str | os.PathLike, stride: int = 1
) -> tuple[AtomicModel, np.ndarray]:
    """Read an MD trajectory (DCD, XTC, TRR, NetCDF, multi-model PDB...) with its topology.

    Args:
        traj_path: trajectory file (any format mdtraj reads).
        topology_path: PSF / prmtop / GRO / PDB / mmCIF with the same atoms.
        stride: keep every ``stride``-th frame (>= 1).

    Returns:
        ``(model, coords)``: the model (elements and bonds from the topology; coordinates
        of frame 0 in Å) and all kept frames as ``(F, N, 3)`` float32 in Å.
    """
    if int(stride) < 1:
        raise InputFormatError(f"stride must be >= 1, got {stride}")
    tp = _require_file(traj_path, "trajectory")
    top_p = _require_file(topology_path, "topology")
    if _suffix(top_p) in _PDB_SUFFIXES + _CIF_SUFFIXES:
        base = load_structure(top_p)
        traj = _md_load(tp, top=str(top_p), stride=int(stride))
    else:
        top = _md_topology(top_p)
        traj = _md_load(tp, top=top, stride=int(stride))
        if traj.n_frames == 0:  # before frame 0 is read below
            raise InputFormatError(f"{tp}: trajectory has no frames")
        top = traj.topology
        residue_index, residue_names, residue_ids, chain_index, chain_ids = _residues_and_chains(
            top
        )
        base = AtomicModel(
            coords=np.asarray(traj.xyz[0] * 10.0, dtype=np.float32),
            elements=_topology_elements(top, top_p),
            atom_names=np.asarray([a.name for a in top.atoms], dtype=str),
            residue_index=residue_index,
            residue_names=residue_names,
            residue_ids=residue_ids,
            chain_index=chain_index,
            chain_ids=chain_ids,
            b_factors=None,
            bonds=_bonds(top),
        )
    if traj.n_atoms != base.n_atoms:
        raise InputFormatError(
            f"{tp}: trajectory has {traj.n_atoms} atoms, topology {top_p} has {base.n_atoms}"
        )
    if traj.n_frames == 0:
        raise InputFormatError(f"{tp}: trajectory has no frames")
    coords = np.asarray(traj.xyz, dtype=np.float32) * np.float32(10.0)  # nm -> Å
    if not np.all(np.isfinite(coords)):
        raise InputFormatError(f"{tp}: trajectory contains NaN/inf coordinates")
    return base.with_coords(coords[0]), coords


def _pdb_atom_name(name: str, element: str) -> str:
    """4-char PDB name field: one-letter elements start in column 14 (PDB convention)."""
    name = name[:4]
    if len(name) < 4 and len(element) == 1:
        return f" {name:<3}"
    return f"{name:<4}"


def write_multimodel_pdb(path: str | os.PathLike, model: AtomicModel, coords: np.ndarray) -> None:
    """Write ``K`` conformations of ``model`` as one PDB with MODEL/ENDMDL records (atomic).

    Args:
        path: output ``.pdb`` path; written via a temp file + fsync + rename.
        model: atoms, residues, chains, elements (written to cols 77-78) and B-factors.
        coords: ``(K, N, 3)`` (or ``(N, 3)`` for one model) coordinates in Å.
    """
    xyz = np.asarray(coords, dtype=np.float64)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.ndim != 3 or xyz.shape[1:] != (model.n_atoms, 3):
        raise InputFormatError(
            f"{path}: coords shape {np.shape(coords)} does not match (K, {model.n_atoms}, 3)"
        )
    if not np.all(np.isfinite(xyz)):
        raise InputFormatError(f"{path}: coordinates contain NaN/inf; refusing to write")
    if xyz.min() < -999.999 or xyz.max() > 9999.999:
        raise InputFormatError(
            f"{path}: coordinates outside the PDB range [-999.999, 9999.999] Å; write mmCIF"
        )
    b = model.b_factors if model.b_factors is not None else np.zeros(model.n_atoms)
    b = np.clip(np.nan_to_num(np.asarray(b, dtype=np.float64)), -99.99, 999.99)
    chain_of_res = model.chain_index
    prefix = []
    for i in range(model.n_atoms):
        r = int(model.residue_index[i])
        chain_id = str(model.chain_ids[chain_of_res[r]])
        cid = chain_id if len(chain_id) == 1 else " "  # longer ids go to segid, cols 73-76
        segid = chain_id[:4] if len(chain_id) > 1 else ""
        resname = str(model.residue_names[r])[:4]
        resseq = int(model.residue_ids[r]) % 10000
        el = str(model.elements[i])
        name = _pdb_atom_name(str(model.atom_names[i]), el)
        record = "ATOM  " if resname in _STANDARD_RESIDUES else "HETATM"
        rn = f"{resname:>3s} " if len(resname) <= 3 else resname
        prefix.append((record, (i + 1) % 100000, name, rn, cid, resseq, el, segid))
    with atomic_open(path, "w", encoding="ascii", newline="\n") as fh:
        fh.write("REMARK   1 WRITTEN BY ATOMICSPI_BAYES\n")
        for k in range(xyz.shape[0]):
            fh.write(f"MODEL     {k + 1:>4d}\n")
            lines = []
            for i, (record, serial, name, resname, cid, resseq, el, segid) in enumerate(prefix):
                x, y, z = xyz[k, i]
                lines.append(
                    f"{record}{serial:>5d} {name} {resname}{cid}{resseq:>4d}    "
                    f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{b[i]:6.2f}      {segid:<4s}{el:>2s}\n"
                )
            fh.writelines(lines)
            fh.write("ENDMDL\n")
        fh.write("END\n")
