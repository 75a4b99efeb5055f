"""The installed package (issue 19): one top-level name, ``hamdex``, whose folders are its subpackages, and a small
public face that imports lazily."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

import hamdex

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """``pip install .`` puts ``hamdex`` into site-packages and nothing else: no ``models``, ``index``, ``service`` or
    ``evaluation`` to shadow (or be shadowed by) a user's own."""
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("hamdex-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"hamdex"}
    for module in ("models/train.py", "index/collection.py", "service/routes/search.py", "evaluation/metrics.py"):
        assert f"hamdex/{module}" in names
    assert "hamdex/py.typed" in names


def test_import_hamdex_is_light_and_names_its_version() -> None:
    code = "import sys, hamdex; print(hamdex.__version__, 'torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/").stdout
    assert out.split() == [metadata.version("hamdex"), "False", "False"]


def test_bare_folder_names_are_not_importable_outside_the_source_tree() -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # a run from a source tree
    for name in ("models", "index", "service", "evaluation"):
        code = f"import importlib.util; print(importlib.util.find_spec({name!r}) is None)"
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/", env=env)
        assert out.stdout.strip() == "True", name


def test_the_public_face_loads_a_model_and_opens_a_collection(text_model_dir: Path, tmp_path: Path) -> None:
    hasher = hamdex.load_model(text_model_dir)
    assert isinstance(hasher, hamdex.Hasher)
    codes = hasher.encode(["goal team match", "rocket orbit launch"]).codes
    assert codes.dtype == np.uint8 and codes.shape == (2, hasher.n_bits // 8)
    path = tmp_path / "collection"
    with hamdex.create_collection(path, hasher.n_bits, hasher.fingerprint) as collection:
        collection.upsert(["a", "b"], codes)
    with hamdex.open_collection(path, hasher.fingerprint) as collection:
        hits = collection.search(codes[:1], k=1)
    assert hits[0][0].id == "a" and hits[0][0].distance == 0
    assert sorted(dir(hamdex)) == sorted(hamdex.__all__)


def test_hamdex_version_prints_the_package_version() -> None:
    from hamdex.service.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"hamdex {hamdex.__version__}"


def test_the_license_is_the_apache_2_text_pyproject_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert metadata.metadata("hamdex")["License-Expression"] == "Apache-2.0"
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
