"""Code quality that CI keeps: ruff lint and format, and the docstring examples run as shown."""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import re
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


# -- the README's snippets run as written -----------------------------------------------------
README = ROOT / "README.md"


def _readme_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(_readme_snippets())))
def test_every_readme_snippet_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that save pictures write here
    code = _readme_snippets()[index]
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, {}, f"README[{index}]", "README.md", 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test)
        assert runner.failures == 0, f"README snippet {index} printed something else"
    else:
        exec(compile(code, f"README.md snippet {index}", "exec"), {"__name__": "__readme__"})


# -- type checking ------------------------------------------------------------------------------
def test_mypy_finds_no_error_in_the_package():
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


# -- the direction of imports (docs/architecture.md) --------------------------------------------
FOUNDATION = {"_vocab", "_checks", "_config", "_version"}
# What each part of the package may import, besides itself and the foundation. Nothing lower
# imports anything higher: masks <- nn <- reconstruction <- experiment <- cli; sampling, data and
# distributed stand alone; pictures (viz) depend on masks only; integrations and the seed API
# sit on top; the package's __init__ re-exports everything.
MAY_IMPORT = {
    "masks": set(),
    "presets": set(),
    "sampling": {"presets"},
    "data": set(),
    "distributed": {"nn"},  # FSDP2 shards the decoder layers
    "viz": {"masks"},
    "nn": {"masks"},
    "reconstruction": {"masks", "nn", "sampling", "presets"},
    "compat": {"masks", "sampling", "presets", "viz"},
    "experiment": {"masks", "nn", "reconstruction", "sampling", "presets", "data", "distributed",
                   "viz"},
    "cli": {"masks", "nn", "reconstruction", "sampling", "presets", "data", "distributed", "viz",
            "experiment"},
    "__main__": {"cli", "distributed"},
    "integrations": {"masks", "nn", "reconstruction", "sampling", "presets"},
}  # fmt: skip


def _part(module: str) -> str:
    """``flexframe.masks.spec`` -> ``masks``; ``flexframe`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports_of(path: Path, module: str) -> set[str]:
    """The flexframe modules a file imports anywhere (functions included), but for imports
    under ``if TYPE_CHECKING:`` (annotations only)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return {m for m in found if m == "flexframe" or m.startswith("flexframe.")}


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted((ROOT / "flexframe").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        own = _part(module)
        if own == "__init__" or own in FOUNDATION:
            continue  # the front door re-exports every part; the foundation imports none
        allowed = MAY_IMPORT[own] | FOUNDATION | {own}
        for target in _imports_of(path, module):
            part = _part(target)
            if part == "__init__":
                upward.append(f"{module} imports the package front door {target}")
            elif part not in allowed and part in MAY_IMPORT | dict.fromkeys(FOUNDATION):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_module_is_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "flexframe").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long


def test_importing_the_masks_costs_torch_and_numpy_only():
    # What flexframe adds on top of torch's own flex_attention import (which brings tqdm).
    script = (
        "import sys\n"
        "from torch.nn.attention.flex_attention import flex_attention\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        "import flexframe, flexframe.masks, flexframe.sampling, flexframe.nn\n"
        "added = sorted({m.split('.')[0] for m in sys.modules} - before)\n"
        "print(' '.join(added))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) <= {"flexframe", "numpy"}, out.stdout


def test_the_package_version_is_the_one_pyproject_declares():
    import flexframe

    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared is not None and flexframe.__version__ == declared.group(1)
