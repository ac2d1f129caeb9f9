"""Configurations' part of the workload: typed values, secrets (the suite
runs with a secret key in $EVENTKERNEL_SECRET_KEY), deletes and a rotation."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from eventkernel.secrets import generate_key

KEYS = st.sampled_from(["c.a", "c.b", "c.secret"])
VALUES = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"]), st.booleans(), st.just(1.5),
                   st.just({"nested": [1, 2]}))

OPS = [
    st.builds(lambda key, v, t: ("config.set", key, v, t), KEYS, VALUES,
              st.sampled_from([None, None, "json", "integer"])),
    st.builds(lambda key: ("config.delete", key), KEYS),
    st.builds(lambda seed: ("config.rotate_key", seed), st.integers(0, 2)),
]
_ROTATION_KEYS = [generate_key() for _ in range(3)]


def resolve(k: Any, op: tuple) -> Any:
    name, *a = op
    if name == "config.set":
        key, value, value_type = a
        return k.config.set, {"key": key, "value": value, "value_type": value_type,
                              "secret": key == "c.secret", "description": f"about {key}"}
    if name == "config.delete":
        return k.config.delete, {"key": a[0]}
    return k.config.rotate_key, {"new_key": _ROTATION_KEYS[a[0]]}


def exercise(k: Any, clock: Any) -> None:
    k.config.set("pool.size", 8, description="workers")
    k.config.set("pool.size", 9)
    k.config.set("db.password", "s3cr3t", secret=True)
    position = k.head
    k.config.get("db.password")
    k.config.get("pool.size", as_of=position)
    k.config.get("db.password", as_of=position)
    k.config.entry("pool.size")
    k.config.list("pool.")
    k.config.list()
    k.config.history("pool.size")
    k.config.key_id()
    k.config.delete("pool.size")
    k.config.rotate_key(generate_key())
