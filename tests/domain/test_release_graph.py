import json
import subprocess
import sys

import pytest

from domain.release.release_graph import InvalidGraph, load_graph, parse_graph


def _graph(deps: dict[str, list[str]]) -> dict:
    return {
        "defaults": {"owner": "o", "workflow": "build.yml"},
        "repositories": {name: {"depends_on": d} for name, d in deps.items()},
    }


def test_shipped_graph_order_and_parallel_groups():
    graph = load_graph()
    assert [list(g) for g in graph.groups] == [
        ["bllvm-consensus", "commons"],
        ["bllvm-protocol"],
        ["bllvm-node"],
        ["bllvm", "bllvm-sdk"],
        ["governance-app"],
    ]
    position = {name: i for i, name in enumerate(graph.order)}
    for name, repo in graph.repositories.items():
        assert all(position[dep] < position[name] for dep in repo.depends_on)
    assert graph.critical_path(dict.fromkeys(graph.order, 3.0)) == 15.0  # 5 levels of 3 s


@pytest.mark.parametrize(
    ("deps", "message"),
    [
        ({"a": ["ghost"]}, "a depends on unknown repository 'ghost'"),
        ({"a": ["a"]}, "a depends on itself"),
        ({"a": ["c"], "b": ["a"], "c": ["b"], "d": []}, "dependency cycle: a -> c -> b -> a"),
    ],
)
def test_invalid_graphs_are_refused_naming_the_problem(deps, message):
    with pytest.raises(InvalidGraph) as refused:
        parse_graph(_graph(deps))
    assert str(refused.value) == message


def test_invalid_repository_fields_are_named():
    with pytest.raises(InvalidGraph, match="'a': invalid dispatch"):
        parse_graph(
            {"defaults": {"owner": "o", "workflow": "w"}, "repositories": {"a": {"dispatch": "carrier-pigeon"}}}
        )


def test_subset_keeps_dependencies():
    graph = load_graph().subset(["bllvm-sdk"])
    assert graph.order == ["bllvm-consensus", "bllvm-protocol", "bllvm-node", "bllvm-sdk"]


def test_cli_release_plan(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "release", "plan"], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout)["groups"][0] == ["bllvm-consensus", "commons"]
    bad = tmp_path / "graph.yaml"
    bad.write_text(
        "repositories:\n  a: {owner: o, workflow: w, depends_on: [b]}\n  b: {owner: o, workflow: w, depends_on: [a]}\n"
    )
    failed = subprocess.run(
        [sys.executable, "-m", "cli.main", "release", "plan", "--graph", str(bad)], capture_output=True, text=True
    )
    assert failed.returncode == 2 and "dependency cycle: a -> b -> a" in failed.stderr
