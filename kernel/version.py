"""The version of eventkernel (one place; pyproject.toml reads it)."""

VERSION = "0.2.0"
