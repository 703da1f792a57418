"""The import graph keeps docs/DESIGN.md's layers: no cycles in faceapp, no import against the layer table,
training and bench stay outside faceapp and app.py.

The modules are parsed with `ast`, never imported, so the test is fast and sees every import, those inside
functions included (they are how heavy or optional modules load late, not a way around the layers).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: docs/DESIGN.md's layer table. A faceapp module (or app.py) may import a module of a lower layer, or one of
#: its own unit (the same package, e.g. faceapp.edits.apply -> faceapp.edits.directions). Units of one layer
#: are siblings: neither imports the other (align beside stylegan; edits never imports inversion).
LAYERS = {
    "faceapp.errors": 0,
    "faceapp": 1,  # the package itself: __version__, FaceAppError
    "faceapp.imageio": 1,
    "faceapp.cuda": 1,
    "faceapp.stylegan": 2,
    "faceapp.align": 2,
    "faceapp.writers": 2,
    "faceapp.inversion": 3,
    "faceapp.edits": 3,
    "faceapp.bundle": 4,
    "faceapp.pipeline": 5,
    "faceapp.fetch": 5,
    "faceapp.batch": 6,
    "faceapp.batch_ray": 7,
    "faceapp.cli": 8,
    "faceapp.web": 8,  # the web app (Gradio): faceapp itself never imports it
    "app": 9,  # starts faceapp.web
    "faceapp.__main__": 9,
}

#: Edges against the rules that main still has (docs/DESIGN.md, "Known exceptions"), to be removed; each
#: must still exist (test_known_exceptions_are_still_needed), so a fixed one leaves this list.
KNOWN: set[tuple[str, str]] = set()

OURS = ("faceapp", "training", "bench", "app")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    where: str  # "path:line"

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} ({self.where})"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for faceapp/, training/, bench/ and app.py under `root`."""
    files = [p for top in ("faceapp", "training", "bench") for p in sorted((root / top).rglob("*.py"))]
    files += [root / "app.py"] if (root / "app.py").is_file() else []
    out = {}
    for p in files:
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _known_module(name: str, modules) -> str:
    """`name`, or its nearest enclosing module we have (`import faceapp.x.y` with y a name, not a file)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def import_edges(root: Path) -> list[Edge]:
    """Every import of one of our modules by one of our modules, at any depth of the file (sorted)."""
    modules = module_files(root)
    edges = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: up from this module's package
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t.split(".")[0] not in OURS:
                    continue
                t = _known_module(t, modules)
                if t != name:
                    edges.add(Edge(name, t, f"{path.relative_to(root)}:{node.lineno}"))
    return sorted(edges, key=lambda e: (e.src, e.dst, e.where))


def unit(module: str) -> str | None:
    """The LAYERS key a faceapp module (or app) belongs to: itself, or its package faceapp.<pkg>."""
    if module in LAYERS:
        return module
    pkg = ".".join(module.split(".")[:2])
    return pkg if module.startswith("faceapp.") and pkg in LAYERS else None


def _in_app(module: str) -> bool:
    return module == "app" or module == "faceapp" or module.startswith("faceapp.")


def layer_violations(edges, known=frozenset()) -> list[str]:
    """Each import against the rules, as 'src -> dst (path:line): why'."""
    bad = []
    for e in edges:
        if (e.src, e.dst) in known:
            continue
        top = e.dst.split(".")[0]
        if _in_app(e.src) and top in ("training", "bench"):
            bad.append(f"{e}: faceapp and app.py never import {top}")
        elif e.src.startswith("training") and top == "bench":
            bad.append(f"{e}: training never imports bench")
        elif _in_app(e.src) and _in_app(e.dst):
            us, ud = unit(e.src), unit(e.dst)
            if us is None or ud is None:
                continue  # test_every_module_has_a_layer names it
            if us != ud and LAYERS[ud] >= LAYERS[us]:
                bad.append(
                    f"{e}: {us} (layer {LAYERS[us]}) may import only lower layers, not {ud} (layer {LAYERS[ud]})"
                )
    return bad


def cycles(edges, known=frozenset(), within=_in_app) -> list[list[Edge]]:
    """One import cycle (as its edges) per strongly connected group of `within` modules."""
    import networkx as nx  # torch's own dependency

    graph = nx.DiGraph()
    for e in edges:
        if within(e.src) and within(e.dst) and (e.src, e.dst) not in known and not graph.has_edge(e.src, e.dst):
            graph.add_edge(e.src, e.dst, edge=e)
    out = []
    for group in sorted(nx.strongly_connected_components(graph), key=min):
        if len(group) > 1:
            found = nx.find_cycle(graph.subgraph(group), source=min(group))
            out.append([graph.edges[u, v]["edge"] for u, v in found])
    return out


def _show(cycle: list[Edge]) -> str:
    return "cycle: " + " -> ".join([cycle[0].src] + [e.dst for e in cycle]) + "\n    " + "\n    ".join(map(str, cycle))


@pytest.fixture(scope="module")
def edges():
    return import_edges(ROOT)


def test_the_graph_is_read(edges):
    # a parser that found nothing would pass every check below
    pairs = {(e.src, e.dst) for e in edges}
    assert ("faceapp.pipeline", "faceapp.edits") in pairs
    assert ("faceapp.cuda.bias_act", "faceapp.cuda._ext") in pairs  # `from faceapp.cuda import _ext`
    assert ("faceapp.cli", "faceapp.bundle") in pairs  # inside a function


def test_every_module_has_a_layer():
    missing = [m for m in module_files(ROOT) if _in_app(m) and unit(m) is None]
    assert not missing, f"add these to LAYERS in tests/test_layering.py and to docs/DESIGN.md's table: {missing}"


def test_no_import_cycles_in_faceapp(edges):
    found = cycles(edges, KNOWN)
    if found:
        pytest.fail("import cycles among faceapp modules:\n" + "\n".join(map(_show, found)), pytrace=False)


def test_no_import_cycles_in_training_or_bench(edges):
    found = cycles(edges, within=lambda m: m.split(".")[0] in ("training", "bench"))
    if found:
        pytest.fail("import cycles among training / bench modules:\n" + "\n".join(map(_show, found)), pytrace=False)


def test_imports_follow_the_layers(edges):
    bad = layer_violations(edges, KNOWN)
    if bad:
        pytest.fail("imports against docs/DESIGN.md's layers:\n" + "\n".join(bad), pytrace=False)


def test_known_exceptions_are_still_needed(edges):
    pairs = {(e.src, e.dst) for e in edges}
    gone = [f"{s} -> {d}" for s, d in sorted(KNOWN) if (s, d) not in pairs]
    assert not gone, f"fixed: remove {gone} from KNOWN in tests/test_layering.py and from docs/DESIGN.md"


def test_the_checks_catch_bad_imports(tmp_path):
    """On a small tree: a function-level import against the layers, a relative import closing a cycle, and
    faceapp importing training are each reported with the offending edge."""
    (tmp_path / "faceapp" / "edits").mkdir(parents=True)
    (tmp_path / "faceapp" / "inversion").mkdir()
    (tmp_path / "training").mkdir()
    (tmp_path / "faceapp" / "__init__.py").write_text("")
    (tmp_path / "faceapp" / "errors.py").write_text("")
    (tmp_path / "faceapp" / "edits" / "__init__.py").write_text("")
    (tmp_path / "faceapp" / "edits" / "a.py").write_text("from .b import x\n")
    (tmp_path / "faceapp" / "edits" / "b.py").write_text(
        "import faceapp.errors\n\ndef f():\n    from faceapp.inversion import modes\n    from faceapp.edits import a\n"
    )
    (tmp_path / "faceapp" / "inversion" / "__init__.py").write_text("")
    (tmp_path / "faceapp" / "inversion" / "modes.py").write_text("import training.labelers\n")
    (tmp_path / "training" / "labelers.py").write_text("")
    edges = import_edges(tmp_path)
    bad = "\n".join(layer_violations(edges))
    assert "faceapp.edits.b -> faceapp.inversion.modes (faceapp/edits/b.py:4)" in bad
    assert "faceapp.inversion.modes -> training.labelers" in bad
    assert "faceapp.edits.b -> faceapp.errors" not in bad
    (cycle,) = cycles(edges)
    assert _show(cycle).startswith("cycle: faceapp.edits.a -> faceapp.edits.b -> faceapp.edits.a")
