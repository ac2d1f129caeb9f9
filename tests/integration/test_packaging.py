"""The distribution is one import package, ``eventkernel``, with its SQL, its
type information and its licence; nothing else claims a top-level name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import eventkernel

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_one_package_with_its_sql_types_and_licence(tmp_path):
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(source)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("eventkernel-*.whl")
    assert wheel.name.startswith(f"eventkernel-{eventkernel.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"eventkernel", f"eventkernel-{eventkernel.__version__}.dist-info"}
    for expected in ("eventkernel/py.typed", "eventkernel/__main__.py", "eventkernel/events/work.py",
                     "eventkernel/services/work.py", "eventkernel/projections/work_items.py",
                     "eventkernel/schema/journal/0001_journal.sql", "eventkernel/schema/journal/0003_chain_over_digests.sql",
                     "eventkernel/schema/projections/work_items.sql", "eventkernel/integrations/langgraph.py",
                     "eventkernel/integrations/langgraph_store.py", "eventkernel/integrations/adk.py",
                     "eventkernel/schema/projections/graphs.sql"):
        assert expected in names, expected
    assert any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(f"eventkernel-{eventkernel.__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert "Requires-Dist: apsw" in metadata and "Requires-Dist: msgspec" in metadata
    # an integration's framework comes with its extra only
    for extra, framework in (("langgraph", "langgraph"), ("adk", "google-adk")):
        assert f"Provides-Extra: {extra}" in metadata
        needs = [line for line in metadata.splitlines() if line.startswith(f"Requires-Dist: {framework}")]
        assert needs and all("extra ==" in line for line in needs), needs
