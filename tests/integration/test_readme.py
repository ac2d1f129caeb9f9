"""The README tells the truth: its example runs, its commands are CI's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from eventkernel.cli import parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_python_example_runs(tmp_path, child_env):
    example = re.search(r"```python\n(.*?)```", README, re.DOTALL).group(1)
    assert len(example.strip().splitlines()) <= 12
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, env=child_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "completed 1"
    assert [line.split()[1] for line in lines[1:]] == [
        "work_item.enqueued", "work_item.claimed", "work_item.lease_extended", "work_item.completed",
    ]


def test_every_python_block_runs_in_order(tmp_path, child_env, pg_url):
    blocks = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    assert len(blocks) >= 8  # the first screen, one per domain, the journal API
    program = "import eventkernel\n" + "\n".join(blocks)
    env = {**child_env, "DATABASE_URL": pg_url}  # the PostgreSQL section's server
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ci_runs_the_readme_test_command_word_for_word():
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line.strip() for line in ci.splitlines() if "pytest" in line and not line.startswith("#"))
    assert f"\n{command}\n" in README


def test_the_readme_demo_command_is_there():
    assert "\npip install . && eventkernel demo demo.db\n" in README


def test_every_cli_command_is_documented():
    sub = next(a for a in parser()._actions if a.dest == "command")
    for name in sub.choices:
        # a row of the commands' table (every command but keygen takes a file)
        assert re.search(rf"\| `eventkernel {name} [A-Z]+[ `]" if name != "keygen" else r"\| `eventkernel keygen[ `]",
                         README), name


def test_the_sql_examples_run_on_a_demo_file(tmp_path, capsys):
    from eventkernel import readonly
    from eventkernel.cli import main

    db = str(tmp_path / "demo.db")
    assert main(["demo", db]) == 0
    capsys.readouterr()
    block = re.search(r"```sql\n(.*?)```", README, re.DOTALL).group(1)
    statements = [s for s in (st.strip() for st in block.split(";")) if "SELECT" in s]
    assert len(statements) == 4
    for sql in statements:
        columns, rows = readonly.query(db, sql)
        assert columns and list(rows), sql
