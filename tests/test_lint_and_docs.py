"""Code quality that CI keeps: ruff lint and format, and the docstring examples run as shown."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flexframe

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_lint_is_clean():
    result = _ruff("check", "flexframe", "tests", "examples", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = _ruff("format", "--check", "flexframe", "tests", "examples", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def _modules():
    for info in pkgutil.walk_packages(flexframe.__path__, "flexframe."):
        if info.name.endswith("__main__"):
            continue
        yield info.name


@pytest.mark.parametrize("module_name", sorted(_modules()))
def test_docstring_examples_print_what_they_show(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save pictures write here
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


def test_public_functions_have_docstrings_with_examples():
    missing = []
    for name in flexframe.__all__:
        obj = getattr(flexframe, name)
        if callable(obj) and not isinstance(obj, type(flexframe)):
            doc = obj.__doc__ or ""
            if ">>>" not in doc:
                missing.append(name)
    assert not missing, f"public names without a docstring example: {missing}"
