"""The one Definitions of the code location, merged from the flows' areas."""

from __future__ import annotations

import dagster as dg

from resources.database import DatabaseResource


def build_definitions() -> dg.Definitions:
    return dg.Definitions(
        resources={"database": DatabaseResource()},
    )


defs = build_definitions()
