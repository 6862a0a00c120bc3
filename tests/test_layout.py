"""The package's layers: only peekflow.workflow reads the Snakemake config, and imports go one way (the workflow layer
uses the stage packages, never the reverse)."""

import ast
from pathlib import Path

import peekflow

PACKAGE = Path(peekflow.__file__).parent


def modules(under: str = "") -> dict[str, ast.Module]:
    """Dotted name -> parsed source of every module of peekflow (below `under`, a subpackage's folder)."""
    out = {}
    for path in sorted((PACKAGE / under).rglob("*.py")):
        name = ".".join(("peekflow", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imported(tree: ast.Module) -> set[str]:
    """Every module an `import` or `from ... import` names, at any depth (imports inside functions too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def outside_workflow() -> dict[str, ast.Module]:
    return {name: tree for name, tree in modules().items() if not name.startswith("peekflow.workflow")}


def test_nothing_outside_the_workflow_layer_imports_it():
    wrong = {name: sorted(m for m in imported(tree) if m == "peekflow.workflow" or m.startswith("peekflow.workflow."))
             for name, tree in outside_workflow().items()}
    assert not {name: found for name, found in wrong.items() if found}


def test_only_the_workflow_layer_takes_a_config():
    takes = [f"{name}.{node.name}" for name, tree in outside_workflow().items() for node in ast.walk(tree)
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             and "config" in {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}]
    assert not takes, "a function outside peekflow.workflow takes the Snakemake config: take its settings instead"
    assert any(isinstance(node, ast.FunctionDef) and node.args.args and node.args.args[0].arg == "config"
               for tree in modules("workflow").values() for node in ast.walk(tree))  # the check sees what it looks for


def test_no_cli_stage_imports_another():
    """A `peekflow <stage>` module imports no other stage's module: what several share lives in peekflow.cli itself,
    a private helper module (`_name`) or the library."""
    from peekflow.cli import STAGES

    stages = {f"peekflow.cli.{stage.replace('-', '_')}" for stage in STAGES}
    cli = modules("cli")
    helpers = {name for name in cli if name.rpartition(".")[2].startswith("_")}
    assert set(cli) - helpers - {"peekflow.cli"} == stages  # every module is a stage or a private helper
    wrong = {name: sorted(imported(tree) & (stages - {name})) for name, tree in cli.items() if name in stages}
    assert not {name: found for name, found in wrong.items() if found}
