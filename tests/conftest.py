"""Session-wide test setup: where the third-party files of ../shared/data are.

The files live beside the repository (``<repo>/../shared/data``). A clone elsewhere finds
them through ``ATOMICSPI_SHARED_DATA``, a ``shared/data`` folder above the clone, or
``/work/shared/data``; tests read the path from ``ATOMICSPI_SHARED_DATA``.
"""

import os
from pathlib import Path


def _find_shared_data() -> Path | None:
    here = Path(__file__).resolve()
    candidates = [parent / "shared" / "data" for parent in here.parents]
    candidates.append(Path("/work/shared/data"))
    return next((c for c in candidates if (c / "cryodrgn").is_dir()), None)


if "ATOMICSPI_SHARED_DATA" not in os.environ:
    found = _find_shared_data()
    if found is not None:
        os.environ["ATOMICSPI_SHARED_DATA"] = str(found)
