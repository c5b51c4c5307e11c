"""The code location too, for the warm run launcher's fork server (wrk_instance/launcher.py), which
restarts it when any file of the project's code or data changes (code_stamp), and for the release job's
step fork server (one per run). A code location that fails to import is not an error here: the worker
imports it again and reports the error in the run, as Dagster's own launcher does.

Besides the imports, what every worker would otherwise build again, once per process, and that a forked
process can share (none of it holds a connection, a file or a thread): the resolved repository (the
worker reconstructs its job from the same `defs` object), SQLAlchemy's configured mappers (the first
ORM query of a process configures them: a noticeable share of a short step's CPU)
and the TLS context of the HTTP clients (the CA bundle, loaded once: resources/http.py).

Last, every object made so far is frozen out of the garbage collector (gc.freeze, as Python's
documentation advises before forking without exec): otherwise the first full collection in each
forked worker walks the objects inherited from here, touching every page it shares with this process
(copy on write), in the middle of a step's resource set-up (docs/performance.md)."""

import contextlib
import gc

import wrk_instance.preload  # noqa: F401  (Dagster's modules first)

with contextlib.suppress(Exception):
    import sqlalchemy.orm

    import orchestration_defs.definitions
    from resources.http import tls_context

    orchestration_defs.definitions.defs.get_repository_def()
    sqlalchemy.orm.configure_mappers()
    tls_context()

gc.freeze()
