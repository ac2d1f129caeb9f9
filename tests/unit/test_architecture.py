"""The layers of the architecture (README, Layout), read off the imports, and the public surface."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import eventkernel
from eventkernel import errors

ROOT = Path(__file__).resolve().parents[2]

# Lower layers never import higher ones.
_E = "eventkernel"
LAYERS = [
    {f"{_E}.errors", f"{_E}.clock", f"{_E}.ids", f"{_E}.validate", f"{_E}.codec", f"{_E}.events", f"{_E}.version",
     f"{_E}.changes", f"{_E}.secrets"},
    {f"{_E}.connection", f"{_E}.fileformat", f"{_E}.migrations", f"{_E}.journal", f"{_E}.schema"},
    {f"{_E}.projections", f"{_E}.projector", f"{_E}.snapshots", f"{_E}.verify"},
    {f"{_E}.services", f"{_E}.registry"},
    {f"{_E}.kernel", f"{_E}.subscription", f"{_E}.aio", f"{_E}.view", f"{_E}.demo", f"{_E}.cli", _E, f"{_E}.__main__",
     f"{_E}.backup", f"{_E}.compaction", f"{_E}.postgres", f"{_E}.pgtables", f"{_E}.transfer"},
    {f"{_E}.integrations"},
]
# What each integration may import besides the library: its extra's framework.
INTEGRATIONS = {"langgraph.py": {"langgraph", "langchain_core"}, "langgraph_store.py": {"langgraph"},
                "adk.py": {"google", "pydantic"}}  # ADK's models are pydantic's (a dependency of google-adk)
# The library modules that use an optional extra's library when it is installed.
OPTIONAL = {"secrets.py": {"cryptography"}, "documents.py": {"numpy"}, "postgres.py": {"psycopg"},
            "langgraph_store.py": {"numpy"}}
# The folders that install as the one import package (pyproject's package-dir).
FOLDERS = {"kernel": (_E,), "projections": (_E, "projections"), "schema": (_E, "schema")}


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
    for folder, package in FOLDERS.items():
        for path in sorted(ROOT.glob(f"{folder}/**/*.py")):
            parts = [*package, *path.relative_to(ROOT / folder).with_suffix("").parts]
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
    return {m for m in found if m.split(".")[0] == _E}


def test_imports_flow_one_way():
    wrong = []
    for name, path in modules():
        mine = layer_of(name)
        for target in imports(path):
            if target == _E and mine < len(LAYERS) - 2:
                wrong.append(f"{name} imports the facade package {_E!r}")
            elif target != _E and layer_of(target) > mine:
                wrong.append(f"{name} (layer {mine}) imports {target} (layer {layer_of(target)})")
    assert not wrong, "\n".join(wrong)


def test_the_library_needs_only_apsw_and_msgspec():
    import sys

    for name, path in modules():
        allowed = set(sys.stdlib_module_names) | {"apsw", "msgspec", _E}
        if name.startswith(f"{_E}.integrations."):
            allowed |= INTEGRATIONS[path.name]
        tree = ast.parse(path.read_text())
        guarded = {id(n) for outer in ast.walk(tree) if isinstance(outer, ast.Try | ast.FunctionDef)
                   for n in ast.walk(outer)}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            )
            for n in names:
                top = n.split(".")[0]
                if top in OPTIONAL.get(path.name, ()):
                    # an extra's library: imported only where it is used, or where its absence is handled
                    assert id(node) in guarded, f"{path.name} imports {n} unguarded"
                    continue
                assert top in allowed, f"{path.name} imports {n}"


def test_all_is_sorted_and_complete():
    assert eventkernel.__all__ == sorted(eventkernel.__all__)
    for name in eventkernel.__all__:
        assert hasattr(eventkernel, name), name
    error_classes = {n for n, obj in inspect.getmembers(errors, inspect.isclass) if issubclass(obj, errors.KernelError)}
    assert error_classes <= set(eventkernel.__all__)


def test_the_error_tree_is_drawn_in_the_docstring():
    doc = errors.__doc__ or ""
    for name, obj in inspect.getmembers(errors, inspect.isclass):
        if issubclass(obj, errors.KernelError):
            assert name in doc, name


def test_builtin_bases_where_callers_expect_them():
    assert issubclass(eventkernel.InvalidArgument, ValueError)
    assert issubclass(eventkernel.NotFound, LookupError)
    assert issubclass(eventkernel.JournalBusy, TimeoutError)
    assert issubclass(eventkernel.TerminalState, eventkernel.InvalidTransition)
    assert issubclass(eventkernel.CommitOutcomeUnknown, eventkernel.JournalError)


def test_the_library_type_checks_under_mypy_strict(tmp_path, monkeypatch):
    from mypy import api

    # mypy cannot follow an editable install's import hook, so it reads the
    # package through a tree of links laid out as it installs.
    package = tmp_path / _E
    package.mkdir()
    for entry in (ROOT / "kernel").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "projections").symlink_to(ROOT / "projections")
    (package / "schema").symlink_to(ROOT / "schema")
    monkeypatch.chdir(tmp_path)
    out, err, status = api.run(["--strict", "--no-incremental", "-p", _E])
    assert status == 0, out + err


def test_every_document_a_file_cites_is_in_the_repository():
    import re
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    if not tracked:  # not a git checkout (an sdist): every file on disk
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    documents = {Path(f).name for f in tracked if f.endswith(".md")}
    cited = set()
    for f in tracked:
        if f.endswith((".py", ".sql", ".md", ".toml")) and (ROOT / f).exists():
            cited |= {(f, m) for m in re.findall(r"\b([A-Za-z0-9_]+\.md)\b", (ROOT / f).read_text())}
    missing = sorted(f"{where} cites {name}" for where, name in cited if name not in documents)
    assert not missing, "\n".join(missing)
