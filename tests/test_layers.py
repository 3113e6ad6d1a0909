"""The package's layers: what importing a module drags in, and where each
fact is written down."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import fastimg
from fastimg import _core

PACKAGE = Path(fastimg.__file__).resolve().parent


def modules_after(statement: str) -> set:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_a_web_server_importing_the_producer_loads_neither_numpy_nor_the_kernels():
    loaded = modules_after("import fastimg.producer")
    assert "numpy" not in loaded and "fastimg._core" not in loaded and "fastimg._kernels" not in loaded
    assert "PIL" not in loaded, "the producer sniffs types from bytes, without Pillow"


def test_the_kernels_load_on_first_use():
    loaded = modules_after("import fastimg; fastimg.backends")
    assert "fastimg._core" in loaded and "numpy" in loaded


def test_the_version_comes_from_the_package_metadata():
    assert fastimg.__version__ == version("fastimg")
    assert f'"{version("fastimg")}"' not in (PACKAGE / "__init__.py").read_text()  # written once, in pyproject.toml


def _pyi_functions(tree: ast.Module) -> dict:
    """name -> parameter names, for module functions and methods of classes."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = [a.arg for a in node.args.args]
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not any(
                    isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list
                ):
                    out[f"{node.name}.{item.name}"] = [a.arg for a in item.args.args][1:]
    return out


def _native_parameters(obj: object) -> list:
    """Parameter names from pybind11's signature line, 'name(a: T, b: U) -> R'."""
    first = (obj.__doc__ or "").strip().splitlines()[0]
    inside = first[first.index("(") + 1 : first.rindex(")")]
    names = [re.match(r"\s*(\w+)", part).group(1) for part in re.split(r",(?![^\[]*\])", inside) if part.strip()]
    return [n for n in names if n != "self"]


def test_core_stub_matches_the_compiled_module():
    stub = _pyi_functions(ast.parse((PACKAGE / "_core.pyi").read_text()))
    for name, params in stub.items():
        owner, _, attr = name.rpartition(".")
        obj = getattr(getattr(_core, owner), attr) if owner else getattr(_core, name)
        if attr == "__init__" or name.endswith(".__init__"):
            obj = getattr(_core, owner).__init__
        assert _native_parameters(obj) == params, name
    native = {n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n))}
    stubbed = {n.split(".")[0] for n in stub} | {
        node.name for node in ast.parse((PACKAGE / "_core.pyi").read_text()).body if isinstance(node, ast.ClassDef)
    }
    assert native <= stubbed, native - stubbed


def test_filter_names_have_one_source():
    from typing import get_args

    from fastimg._kernels import FilterName

    native = tuple(_core.Filter.__members__)
    assert fastimg.FILTERS == native and get_args(FilterName) == native
    stub = next(
        node
        for node in ast.parse((PACKAGE / "_core.pyi").read_text()).body
        if isinstance(node, ast.ClassDef) and node.name == "Filter"
    )
    assert (
        tuple(
            item.target.id
            for item in stub.body
            if isinstance(item, ast.AnnAssign) and not item.target.id.startswith("__")
        )
        == native
    )
