"""The release benchmark's jobs, built once per process at import, as orchestration_defs.definitions
builds the shipped job: the step fork server imports this module (bench/release.py PRELOAD), so every
forked step worker reconstructs its job from these objects instead of building it again."""

import gc

import dagster as dg

from domain.release.release_graph import ReleaseGraph, Repository, build_graph, load_graph


def wide_graph() -> ReleaseGraph:
    """16 repositories in 4 levels of 4, each depending on two of the level before."""
    repos = {}
    for level in range(4):
        for i in range(4):
            deps = () if level == 0 else (f"r{level - 1}{i}", f"r{level - 1}{(i + 1) % 4}")
            repos[f"r{level}{i}"] = Repository(
                name=f"r{level}{i}", owner="bench", workflow="build.yml", depends_on=deps
            )
    graph = build_graph(repos)
    return ReleaseGraph(graph.repositories, graph.groups, "bench/release")


def _bound(graph: ReleaseGraph, name: str) -> dg.JobDefinition:
    from orchestration_defs.release import build_release_job
    from resources.dagster_resources import DatabaseResource, GitHubResource

    defs = dg.Definitions(
        jobs=[build_release_job(graph, name)], resources={"database": DatabaseResource(), "github": GitHubResource()}
    )
    return defs.get_job_def(name)


SHIPPED = _bound(load_graph(), "release_build")
WIDE = _bound(wide_graph(), "release_build_wide")


def shipped_job() -> dg.JobDefinition:
    return SHIPPED


def wide_job() -> dg.JobDefinition:
    return WIDE


gc.freeze()  # the jobs above are shared with the forked workers: no collection walks them there
