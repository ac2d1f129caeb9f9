"""The layers of DESIGN.md, read off the imports, and the public surface."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import kernel
from kernel import errors

ROOT = Path(__file__).resolve().parents[2]

# Lower layers never import higher ones.
LAYERS = [
    {"kernel.errors", "kernel.clock", "kernel.ids", "kernel.validate", "kernel.codec", "kernel.events"},
    {"kernel.connection", "kernel.migrations", "kernel.journal"},
    {"projections", "kernel.projector", "kernel.verify"},
    {"kernel.services"},
    {"kernel.kernel", "kernel.view", "kernel.demo", "kernel.cli", "kernel", "kernel.__main__"},
]


def layer_of(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                if best is None or len(name) > len(best[1]):
                    best = (i, name)
    assert best is not None, f"{module} belongs to no layer"
    return best[0]


def modules():
    for path in sorted([*ROOT.glob("kernel/**/*.py"), *ROOT.glob("projections/**/*.py")]):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(path: Path) -> set[str]:
    known = {name for name, _ in modules()}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m.split(".")[0] in ("kernel", "projections")}


def test_imports_flow_one_way():
    wrong = []
    for name, path in modules():
        mine = layer_of(name)
        for target in imports(path):
            if target in ("kernel",) and mine < len(LAYERS) - 1:
                wrong.append(f"{name} imports the facade package 'kernel'")
            elif target != "kernel" and layer_of(target) > mine:
                wrong.append(f"{name} (layer {mine}) imports {target} (layer {layer_of(target)})")
    assert not wrong, "\n".join(wrong)


def test_the_library_needs_only_apsw_and_msgspec():
    import sys

    allowed = set(sys.stdlib_module_names) | {"apsw", "msgspec", "kernel", "projections"}
    for _, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            )
            for n in names:
                assert n.split(".")[0] in allowed, f"{path.name} imports {n}"


def test_all_is_sorted_and_complete():
    assert kernel.__all__ == sorted(kernel.__all__)
    for name in kernel.__all__:
        assert hasattr(kernel, name), name
    error_classes = {n for n, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, errors.KernelError)}
    assert error_classes <= set(kernel.__all__)


def test_the_error_tree_is_drawn_in_the_docstring():
    doc = errors.__doc__ or ""
    for name, obj in inspect.getmembers(errors, inspect.isclass):
        if issubclass(obj, errors.KernelError):
            assert name in doc, name


def test_builtin_bases_where_callers_expect_them():
    assert issubclass(kernel.InvalidArgument, ValueError)
    assert issubclass(kernel.NotFound, LookupError)
    assert issubclass(kernel.JournalBusy, TimeoutError)
    assert issubclass(kernel.TerminalState, kernel.InvalidTransition)
    assert issubclass(kernel.CommitOutcomeUnknown, kernel.JournalError)


def test_the_library_type_checks_under_mypy_strict():
    from mypy import api

    root = Path(__file__).resolve().parents[2]
    out, err, status = api.run(["--strict", "--no-incremental", str(root / "kernel"), str(root / "projections")])
    assert status == 0, out + err
