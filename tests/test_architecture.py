"""The layer order that docs/ARCHITECTURE.md states, checked on every module's imports.

The table under "## Layers" is read from the document itself, so the
document and the code cannot drift apart: a module in no layer, an import
from a higher layer (also one inside a function), a third-party package a
layer does not list, or an import of `tools`/`tests` from the product fails.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ("paradis_tf", "firmware_bridge")


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]
    may_import_layers: tuple[str, ...]
    may_import_modules: tuple[str, ...]
    third_party: tuple[str, ...]


def read_layers(text: str) -> list[Layer]:
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # header, rule
    names = [row.split("|")[1].strip() for row in rows]
    layers = []
    for row in rows:
        name, modules, allowed, third = [c.strip() for c in row.strip().strip("|").split("|")]
        ticked = re.findall(r"`([^`]+)`", allowed)
        plain = re.sub(r"`[^`]+`|\(.*?\)", "", allowed)
        layers.append(Layer(
            name,
            tuple(re.findall(r"`([^`]+)`", modules)),
            tuple(w for w in re.findall(r"[a-z_]+", plain) if w in names),
            tuple(ticked),
            tuple(re.findall(r"`([^`]+)`", third)),
        ))
    return layers


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def _matches(module: str, entry: str) -> bool:
    if entry in PACKAGES[:1] and "." not in entry:
        return module == entry  # the root package is its own module, not everything below it
    return module == entry or module.startswith(entry + ".")


def layer_of(module: str, layers: list[Layer]) -> Layer | None:
    hits = [(len(entry), layer) for layer in layers for entry in layer.modules if _matches(module, entry)]
    return max(hits, key=lambda h: h[0])[1] if hits else None


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement, functions included."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((node.lineno, sub if sub in known else base))
    return out


def violations(module: str, source: str, is_package: bool, layers: list[Layer], known: set[str]) -> list[str]:
    layer = layer_of(module, layers)
    if layer is None:
        return [f"{module}: in no layer of docs/ARCHITECTURE.md (add it to the table)"]
    by_name = {l.name: l for l in layers}
    found = []
    for line, target in imports_of(source, module, is_package, known):
        top = target.split(".")[0]
        where = f"{module}:{line} imports {target}"
        if top in ("tools", "tests"):
            found.append(f"{where}: product code never imports {top}/")
        elif top in PACKAGES:
            target_layer = layer_of(target, layers)
            if target_layer is None:
                found.append(f"{where}, which is in no layer")
            elif not (target_layer is layer or target_layer.name in layer.may_import_layers
                      or any(_matches(target, m) for m in layer.may_import_modules)):
                found.append(f"{where} (layer {target_layer.name}); layer {layer.name} may import "
                             f"{', '.join(layer.may_import_layers) or 'nothing else'}")
            assert target_layer is None or target_layer.name in by_name
        elif top != "__future__" and top not in sys.stdlib_module_names and top not in layer.third_party:
            found.append(f"{where}: third-party package {top!r} is not listed for layer {layer.name}")
    return found


@pytest.fixture(scope="module")
def layers() -> list[Layer]:
    return read_layers(DOC.read_text(encoding="utf-8"))


def test_the_document_states_the_layers_in_order(layers):
    assert [l.name for l in layers] == ["format", "runtime", "keras", "mesh", "bridge", "cli"]
    for i, layer in enumerate(layers):
        below = {l.name for l in layers[:i]}
        assert set(layer.may_import_layers) <= below, f"{layer.name} may import a layer above it"


def test_every_module_named_in_the_table_exists(layers):
    known = set(product_modules())
    for layer in layers:
        for entry in layer.modules:
            assert any(_matches(m, entry) for m in known), f"docs/ARCHITECTURE.md names {entry}, which does not exist"


def test_every_import_follows_the_layer_order(layers):
    modules = product_modules()
    known = set(modules)
    found = []
    for module, path in modules.items():
        found += violations(module, path.read_text(encoding="utf-8"), path.name == "__init__.py", layers, known)
    assert not found, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(found)


def test_the_root_package_goes_up_only_from_inside_a_function():
    """`import paradis_tf` stays TensorFlow-free: its one upward import runs only when Keras loads."""
    tree = ast.parse((ROOT / "paradis_tf" / "__init__.py").read_text(encoding="utf-8"))
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names] + [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith("paradis_tf.models")]


def test_the_checker_catches_upward_lazy_and_foreign_imports(layers):
    known = set(product_modules())
    lazy_up = "def f():\n    from paradis_tf.models import ParaDiSModel\n"
    assert violations("paradis_tf.runtime.local", lazy_up, False, layers, known)
    assert violations("paradis_tf.mesh.node", "import tensorflow as tf\n", False, layers, known)
    assert violations("paradis_tf.bundle", "from paradis_tf.runtime import program\n", False, layers, known)
    assert violations("paradis_tf.bundle", "from . import quant\nimport tools.bench_mesh\n", False, layers, known)
    assert violations("paradis_tf.newthing", "", False, layers, known)
    assert not violations("paradis_tf.mesh.node", "from paradis_tf.runtime.program import DeviceProgram\nimport grpc\n",
                          False, layers, known)
    assert not violations("paradis_tf.mesh", "from .node import serve\n", True, layers, known)
