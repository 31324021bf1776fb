"""The batch's code for a cluster: one zip of the `jobs` and `schemas` packages (`--py-files`).

spark-submit puts the zip first on the Python path of the driver and of every executor's Python
workers, so a cluster needs no install of this project, only its dependencies (pyproject.toml)
in the Python that `spark.pyspark.python` names. The zip is reproducible (fixed entry times) and
carries the code version the run ledger records, since no git checkout travels with it.
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path

from jobs.pipeline import CODE_VERSION_FILE, code_version

PACKAGES = ("jobs", "schemas")
# Zip entries carry a timestamp; a fixed one makes the same code give the same bytes.
ENTRY_TIME = (1980, 1, 1, 0, 0, 0)


def package_files(package: str) -> list[tuple[str, Path]]:
    """(name in the zip, file) for every module of an importable package, subpackages included."""
    module = importlib.import_module(package)
    assert module.__file__ is not None
    folder = Path(module.__file__).resolve().parent
    return [
        (f"{package}/{path.relative_to(folder).as_posix()}", path)
        for path in sorted(folder.rglob("*.py"))
        if "__pycache__" not in path.parts
    ]


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, ENTRY_TIME)
    info.external_attr = 0o644 << 16  # rw-r--r-- when unpacked
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build_py_files(dest: Path) -> Path:
    """Write the zip for `spark-submit --py-files`; returns its path."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    entries = [entry for package in PACKAGES for entry in package_files(package)]
    with zipfile.ZipFile(dest, "w") as bundle:
        for name, path in entries:
            bundle.writestr(_entry(name), path.read_bytes())
        bundle.writestr(_entry(f"jobs/{CODE_VERSION_FILE}"), code_version() + "\n")
    return dest
