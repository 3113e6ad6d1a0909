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


# Each package may import its own layer and those below it, never one above.
# The kernels (the package's root, _kernels, _core) are the floor.
LAYERS = ("image", "queue", "producer", "worker", "serve", "cli")


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth of its code."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _layer(name: str) -> str | None:
    """The layer of module ``name``; None outside the package."""
    parts = name.split(".")
    if parts[0] != "fastimg":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "kernels"


def _layer_of(path: Path) -> str:
    return _layer("fastimg." + path.relative_to(PACKAGE).parts[0].removesuffix(".py")) or "kernels"


def _package_modules() -> list:
    """The modules of the layers above the kernels."""
    return sorted(p for p in PACKAGE.rglob("*.py") if _layer_of(p) != "kernels")


def test_no_layer_imports_one_above_it():
    rank = {name: i for i, name in enumerate(("kernels",) + LAYERS)}
    for path in _package_modules():
        own = _layer_of(path)
        for name in _imports(path):
            layer = _layer(name)
            assert layer is None or rank[layer] <= rank[own], f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_image_pipeline_knows_nothing_of_redis_or_the_queue():
    for path in sorted((PACKAGE / "image").glob("*.py")):
        for name in _imports(path):
            assert name.split(".")[0] != "redis", f"{path.name} imports {name}"
            assert _layer(name) in (None, "kernels", "image"), f"{path.name} imports {name}"
    loaded = modules_after("import " + ", ".join(f"fastimg.image.{p.stem}" for p in (PACKAGE / "image").glob("*.py")))
    assert not any(m == "redis" or m.startswith("redis.") for m in loaded)


def test_the_queue_protocol_knows_nothing_of_the_worker_or_the_command_line():
    for path in sorted((PACKAGE / "queue").glob("*.py")):
        for name in _imports(path):
            assert _layer(name) in (None, "kernels", "image", "queue"), f"{path.name} imports {name}"


def test_importing_the_sniffer_loads_no_numpy():
    loaded = modules_after("import fastimg.image.sniff")
    assert "numpy" not in loaded and "PIL" not in loaded and "fastimg._kernels" not in loaded


def _process_command(*argv: str) -> set:
    code = (
        "import contextlib, io\n"
        "from fastimg.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    try: main({['process', *argv]!r})\n"
        "    except SystemExit: pass"
    )
    return modules_after(code)


def test_the_process_command_loads_no_redis(tmp_path):
    photo = Path(__file__).parent / "data" / "rocket.jpg"
    loaded = _process_command(str(photo), "-o", str(tmp_path), "-j", "1")
    assert (tmp_path / "rocket_thumbnail.webp").is_file()
    assert not any(m == "redis" or m.startswith("redis.") for m in loaded)


def test_process_help_loads_neither_the_pipeline_nor_redis():
    loaded = _process_command("--help")
    assert not {"numpy", "PIL", "redis", "fastimg._kernels", "fastimg.image.pipeline"} & loaded


def _sizes(path: Path) -> list:
    """(what, lines) of the module, and of each class and function in it."""
    text = path.read_text()
    out = [(f"module {path.relative_to(PACKAGE)}", len(text.splitlines()), 300)]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            kind, limit = ("class", 200) if isinstance(node, ast.ClassDef) else ("function", 80)
            out.append((f"{kind} {path.relative_to(PACKAGE)}:{node.name}", node.end_lineno - node.lineno + 1, limit))
    return out


def test_no_room_is_too_big():
    """Modules up to 300 lines, classes up to 200, functions up to 80, in the
    layers above the kernels."""
    over = [
        f"{what}: {n} lines (limit {limit})" for p in _package_modules() for what, n, limit in _sizes(p) if n > limit
    ]
    assert not over, over


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
