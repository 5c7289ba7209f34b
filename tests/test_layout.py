"""The package's layout: every module imports on its own, and imports go only down the floors
(so there is no import cycle), read from the source of compress/."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import compress

PACKAGE = Path(compress.__file__).parent

# A module imports only from its own floor or those below (docs/development.md, "Layout").
FLOORS = {
    "compress": 0,
    "compress.errors": 0,
    "compress.files": 0,
    "compress.cache": 0,
    "compress.config": 0,
    "compress.sections": 0,
    "compress.version": 0,
    "compress.results": 0,
    "compress.tables": 0,
    "compress.budget": 0,
    "compress.registry": 1,
    "compress.checkpoint": 1,
    "compress.data": 2,
    "compress.stats": 0,
    "compress.latency": 0,
    "compress.threads": 0,
    "compress.bits": 0,
    "compress.distributed": 0,
    "compress.modifier": 3,
    "compress.pruning": 3,
    "compress.qat": 3,
    "compress.training": 3,
    "compress.sharing": 3,
    "compress.encode": 4,
    "compress.variants": 4,
    "compress.stages": 5,
    "compress.report": 6,
    "compress.bundle": 6,
    "compress.pipeline": 6,
    "compress.analysis": 7,
    "compress.cli": 8,
    "compress.__main__": 8,
}
# Imports that go up a floor, by design, and the reason. Each is a lookup by name in a
# registry whose entries live above (as models are found by name in compress_models).
UPWARD = {
    ("compress.config", "compress.pruning.registry"): "a [prune] section is the named method's own",
    (
        "compress",
        "compress.pipeline",
    ): "`from compress import run_pipeline`, imported when first used",
    ("compress.config", "compress.variants.registry"): "[quantize] variants are registered names",
    ("compress.config", "compress.data.registry"): "a [data] section is the named source's own",
}


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def floor(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return FLOORS[".".join(parts[:n])]
    raise AssertionError(
        f"{module} has no floor: "
        "add it to FLOORS in tests/test_layout.py and to docs/development.md"
    )


def imports_of(module: str) -> set[str]:
    """compress modules that `module` imports anywhere in its source (functions included)."""
    path = PACKAGE.parent / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from compress.pruning import masks` imports a module too
            found |= {
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in MODULES
            }
    return {name for name in found if name in MODULES and name != module}


MODULES = set(module_names())


def test_every_module_is_on_a_floor():
    for module in MODULES:
        floor(module)


def test_imports_go_only_down_the_floors():
    upward = {
        (module, target)
        for module in MODULES
        for target in imports_of(module)
        if floor(target) > floor(module)
    }
    assert upward == set(UPWARD), f"imports that go up a floor: {sorted(upward - set(UPWARD))}"


def test_there_is_no_import_cycle():
    graph = {m: {t for t in imports_of(m) if (m, t) not in UPWARD} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


IMPORT_EACH_ALONE = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [
        m for m in sys.modules if m == "compress" or m.startswith(("compress.", "compress_models"))
    ]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    # One interpreter (torch loads once); the package is dropped from sys.modules before each
    # import, so each module is imported first, as a user's script would.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            IMPORT_EACH_ALONE,
            json.dumps(sorted(MODULES - {"compress.__main__"})),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {}
    # __main__ runs the command line when imported
    version = subprocess.run(
        [sys.executable, "-m", "compress", "--version"], capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0 and version.stdout.startswith("compress, version"), (
        version.stderr
    )


def test_every_subpackage_is_installed():
    """A non-editable install ships only the packages pyproject.toml lists."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "compress").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)


def test_only_the_masks_module_imports_torch_prune():
    """compress.pruning.masks is the one owner of the re-parametrization (docs/methods.md, "Pruning
    methods"): every other module goes through its functions."""
    users = {module for module in MODULES if _imports_torch_prune(module)}
    assert users == {"compress.pruning.masks"}


def _imports_torch_prune(module: str) -> bool:
    path = PACKAGE.parent / Path(*module.split("."))
    tree = ast.parse(
        (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name == "torch.nn.utils.prune" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (
            node.module == "torch.nn.utils.prune"
            or (node.module == "torch.nn.utils" and any(a.name == "prune" for a in node.names))
        ):
            return True
    return False
