"""One-way imports between the subpackages of nwb_lrconn, read from the source with ``ast``.

Every ``import`` and ``from ... import`` of every module counts, at module level or inside a
function (the lazy imports that keep ``import nwb_lrconn`` light are imports all the same),
relative or absolute, and so does ``importlib.import_module`` with a literal name. Imports within
one subpackage are free; the package root (``nwb_lrconn/__init__.py``, which holds
``__version__`` and imports nothing eagerly) may be imported from anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nwb_lrconn

PACKAGE_DIR = Path(nwb_lrconn.__file__).parent
ROOT = "nwb_lrconn"

# Subpackage (or top-level module) -> the lower layers it may import. Lowest first:
# data <- io / model (siblings) <- inference <- extension / plotting (siblings) <- pipeline
# <- pipeline_joint <- report / batch <- demo <- cli.
_BASE = {"_validation", "data", "config"}
ALLOWED: dict[str, set[str]] = {
    "_validation": set(),
    "data": {"_validation"},
    "config": {"_validation", "data"},
    "io": _BASE,
    "model": _BASE,
    "inference": _BASE | {"model"},
    "extension": _BASE | {"io", "model", "inference"},
    "plotting": _BASE | {"io", "model", "inference"},
    "pipeline": _BASE | {"io", "model", "inference", "extension", "plotting"},
    "report": _BASE | {"io", "model", "inference", "extension", "plotting", "pipeline"},
    "batch": _BASE | {"io", "model", "inference", "extension", "plotting", "pipeline"},
}
# Several sessions as one network: a pipeline over the single-session pipeline's steps.
ALLOWED["pipeline_joint"] = ALLOWED["pipeline"] | {"pipeline"}
ALLOWED["report"].add("pipeline_joint")
ALLOWED["batch"].add("pipeline_joint")
ALLOWED["demo"] = set(ALLOWED["report"]) | {"report", "batch"}
ALLOWED["cli"] = set(ALLOWED["demo"]) | {"demo"}


def _module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    """``nwb_lrconn.io.units`` -> ``io``; the root package -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_module(name: str, package_dir: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (package_dir / rel).with_suffix(".py").is_file() or (package_dir / rel).is_dir()


def _imported(node: ast.AST, package: str, package_dir: Path) -> list[str]:
    """Absolute names of the nwb_lrconn modules one node imports (empty for anything else)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # ``from pkg import name``: name may be a submodule of pkg or an attribute of it.
        names = [
            f"{module}.{alias.name}"
            if _is_module(f"{module}.{alias.name}", package_dir)
            else module
            for alias in node.names
        ]
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and not node.args[0].value.startswith(".")
    ):
        names = [node.args[0].value]
    else:
        return []
    return [name for name in names if name == ROOT or name.startswith(ROOT + ".")]


def import_edges(package_dir: Path = PACKAGE_DIR) -> list[tuple[str, str, str, int]]:
    """Every import that crosses layers: (from layer, to layer, file, line)."""
    edges = []
    for path in sorted(package_dir.rglob("*.py")):
        module = _module_name(path, package_dir)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        source = _layer(module)
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            for name in _imported(node, package, package_dir):
                target = _layer(name)
                if target is not None and target != source:
                    rel = path.relative_to(package_dir.parent).as_posix()
                    edges.append((source, target, rel, node.lineno))
    return edges


def layer_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source, target, _, _ in import_edges():
        graph.setdefault(source, set()).add(target)
    return graph


def test_every_layer_is_placed():
    layers = {_layer(_module_name(p, PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*.py")} - {None}
    unplaced = sorted(layers - set(ALLOWED))
    assert not unplaced, f"new subpackages or modules {unplaced}: add them to ALLOWED"


def test_allowed_layers_form_no_cycle():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in ALLOWED[start]
        )

    assert not [layer for layer in ALLOWED if reaches(layer, layer, {layer})]


def test_imports_only_go_down():
    upward = [
        f"{file}:{line}: {source} imports {target} (allowed: {sorted(ALLOWED[source])})"
        for source, target, file, line in import_edges()
        if target not in ALLOWED.get(source, set())
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_checker_sees_lazy_relative_and_absolute_imports(tmp_path):
    pkg = tmp_path / ROOT
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data.py").write_text("")
    (pkg / "io" / "__init__.py").write_text("from .. import data\n")
    (pkg / "io" / "x.py").write_text(
        "import importlib\n"
        "from ..pipeline import run\n"
        "def f():\n"
        "    import nwb_lrconn.cli\n"
        "    from nwb_lrconn import report\n"
        "    importlib.import_module('nwb_lrconn.batch')\n"
    )
    (pkg / "pipeline.py").write_text("")
    (pkg / "report.py").write_text("")
    (pkg / "io" / "y.py").write_text("from .. import __version__\nfrom . import x\n")
    edges = {(s, t, line) for s, t, _, line in import_edges(pkg)}
    assert edges == {
        ("io", "data", 1),
        ("io", "pipeline", 2),
        ("io", "cli", 4),
        ("io", "report", 5),
        ("io", "batch", 6),
    }
