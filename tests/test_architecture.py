"""The import structure: one way, CLIs -> pipeline -> stages -> shared modules, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PIPELINE = {"tfdense.pipeline"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_files() -> list[Path]:
    return [p for package in ("tfdense", "tuning") for p in (REPO / package).rglob("*.py")]


# An entry point is a module that runs as `python -m`: derived, so a new CLI cannot be missed.
CLIS = {module_name(p) for p in project_files() if 'if __name__ == "__main__":' in p.read_text()}


def import_graph() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports anywhere (functions included)."""
    modules = {module_name(p): p for p in project_files()}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name and c not in ("tfdense",)}
        graph[name] = targets
    return graph


def layer(name: str) -> int:
    if name in CLIS or name.startswith("tfdense.cli") or name == "tfdense.__main__":
        return 3
    if name in PIPELINE:
        return 2
    if name.startswith("tfdense.stages.") or name.startswith("tuning."):
        return 1
    return 0  # shared modules (and the tfdense.stages package helpers)


def test_entry_points_live_in_one_place_and_share_no_name_with_a_stage():
    commands = {name for name in CLIS if name.startswith("tfdense.")} - {"tfdense.train"}  # the documented launcher
    assert commands and all(name.startswith("tfdense.cli.") for name in commands), commands
    assert {"tfdense.cli.train", "tfdense.cli.footprint", "tfdense.cli.teacher", "tfdense.cli.latency", "tuning.search"} <= CLIS
    stages = {p.stem for p in (REPO / "tfdense" / "stages").glob("*.py")} - {"__init__"}
    assert not stages & {name.rsplit(".", 1)[-1] for name in CLIS}, stages & {name.rsplit(".", 1)[-1] for name in CLIS}


def test_imports_only_flow_downwards():
    offenders = []
    for source, targets in import_graph().items():
        for target in targets:
            downward = layer(target) < layer(source)
            same_layer_allowed = layer(source) == 0 and layer(target) == 0
            helper = target in ("tfdense.stages", "tuning") and layer(source) == 1
            # The tuning package's own modules may use each other (acyclic, checked below);
            # stages never import one another.
            within_tuning = source.startswith("tuning.") and target.startswith("tuning.") and layer(source) == 1
            # `python -m tfdense` and `python -m tfdense.train` only hand over to the commands.
            launcher = source in ("tfdense.__main__", "tfdense.train") and target.startswith("tfdense.cli")
            if not (downward or same_layer_allowed or helper or within_tuning or launcher):
                offenders.append(f"{source} -> {target}")
    assert not offenders, offenders


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_tuner_never_imports_a_stage_or_the_pipeline():
    for source, targets in import_graph().items():
        if source.startswith("tuning"):
            assert not any(t.startswith("tfdense.stages") or t in PIPELINE for t in targets), (source, targets)
