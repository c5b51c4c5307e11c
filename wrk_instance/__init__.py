"""The single-machine Dagster instance's extensions: the classes dagster.yaml and dagster.postgres.yaml
name (warm run launcher, step log files, SQLite schedule storage) and what they preload.

The one package that uses Dagster's private modules (pyproject.toml pins Dagster exactly; the symbols
are named in tests/wrk_instance/test_dagster_private_symbols.py). Referenced only from the instance
configuration and the scripts that start it; the code location imports none of it. What each piece
buys, and what the Kubernetes deployment has instead: docs/dagster-internals.md."""
