"""Fixtures and hypothesis profiles shared by every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import eventkernel

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

START_MS = 1_700_000_000_000

# Secret configuration values need a key; the tests of running without one remove it.
os.environ.setdefault("EVENTKERNEL_SECRET_KEY", "dGVzdC1zZWNyZXQta2V5LW9mLXRoZS1zdWl0ZS0wMDA=")


@pytest.fixture
def clock() -> eventkernel.FrozenClock:
    return eventkernel.FrozenClock(START_MS)


@pytest.fixture
def db_path(tmp_path: object) -> str:
    return str(tmp_path / "journal.db")  # type: ignore[operator]


@pytest.fixture
def engine() -> str:
    """The engine ``k`` (or a fixture of a module taking it) runs on: a file,
    or, in a module that sets ``BOTH_ENGINES = True``, a file and PostgreSQL
    (each test once on each; a test there that works on the file itself
    says ``@pytest.mark.parametrize("engine", ["sqlite"])``)."""
    return "sqlite"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    chosen = any("engine" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))
    if "engine" in metafunc.fixturenames and getattr(metafunc.module, "BOTH_ENGINES", False) and not chosen:
        metafunc.parametrize("engine", ["sqlite", "postgres"])


@pytest.fixture
def k(db_path: str, clock: eventkernel.FrozenClock, engine: str) -> Iterator[eventkernel.Kernel]:
    """A new kernel at ``db_path``; on PostgreSQL, a journal in a schema of its
    own on the suite's server, with its replica."""
    if engine == "postgres":
        from support import open_kernel, server_tables_hold

        with open_kernel("postgres", clock=clock) as kern:
            yield kern
            server_tables_hold(kern)
        return
    with eventkernel.open(db_path, clock=clock) as kern:
        yield kern


class Journal:
    """Opens the test's journal (the same one at each call) with the options
    given: ``journal(**options)`` an ``eventkernel.Kernel``,
    ``journal.aio(**options)`` an ``eventkernel.aio`` one."""

    def __init__(self, target: str, **where: str) -> None:
        self.target, self.where = target, where

    def __call__(self, **options: object) -> eventkernel.Kernel:
        return eventkernel.open(self.target, **self.where, **options)  # type: ignore[arg-type]

    def aio(self, **options: object) -> object:
        import eventkernel.aio

        return eventkernel.aio.open(self.target, **self.where, **options)  # type: ignore[arg-type]


@pytest.fixture
def journal(db_path: str, engine: str) -> Journal:
    """The test's journal: the file at ``db_path``, or on PostgreSQL (in a
    module that sets ``BOTH_ENGINES = True``) a schema of its own on the
    suite's server."""
    if engine == "postgres":
        import uuid

        from benchmarks.pgcluster import shared

        return Journal(shared().url(), schema="j_" + uuid.uuid4().hex[:12])
    return Journal(db_path)


@pytest.fixture(scope="session")
def pg_cluster() -> object:
    """A PostgreSQL server of the suite's own (started on first use, about a
    second; stopped and removed when the suite ends)."""
    from benchmarks.pgcluster import shared

    return shared()


@pytest.fixture
def pg_url(pg_cluster: object) -> str:
    """The URL of a fresh, empty database on the suite's PostgreSQL server."""
    return pg_cluster.new_database()  # type: ignore[attr-defined,no-any-return]
