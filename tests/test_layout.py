"""The layout docs/ARCHITECTURE.md describes: subpackages in layers, no import cycle between them, and
stages that meet only at schema columns (no stage module imports another stage module)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
TOPS = ("pipeline", "stages", "schemas")


def _modules() -> dict[str, Path]:
    found = {}
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _group(module: str) -> str:
    """The unit of layering: a subpackage (pipeline.run, stages.video), a top-level module, or a stage."""
    parts = module.split(".")
    if len(parts) > 2 or parts[0] == "pipeline":
        return ".".join(parts[:2])
    return module  # stages.<stage>, schemas.<table>


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every vidprep module `path` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n in modules and n not in TOPS)
    return out


def _edges() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        for target in _imports(path, modules):
            if _group(target) != _group(module):
                edges.setdefault(_group(module), set()).add(_group(target))
    return edges


def test_no_import_cycle_between_subpackages():
    edges = _edges()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(f"{a} ⇄ {b}" for a, targets in edges.items() for b in targets if reaches(b, a, {b}))
    assert not cycles, f"import cycles between subpackages: {cycles}"


def test_stages_meet_only_at_columns():
    stage_files = {f"stages.{p.stem}" for p in (ROOT / "stages").glob("*.py") if p.stem not in ("__init__", "base")}
    crossing = sorted(f"{a} → {b}" for a, targets in _edges().items() if a in stage_files
                      for b in targets if b in stage_files)
    assert not crossing, f"a stage imports another stage: {crossing}"


def test_pipeline_keeps_a_handful_of_top_level_modules():
    top = sorted(p.name for p in (ROOT / "pipeline").glob("*.py"))
    assert top == ["__init__.py", "cli.py", "config.py", "typed.py"], top
