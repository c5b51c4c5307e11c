"""What the fork servers prepare once for every worker they fork (wrk_instance/preload.py,
preload_code.py). These tests fail when a Dagster or alembic upgrade changes the path they rely on."""

import os
from pathlib import Path

import dagster as dg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

import wrk_instance.preload  # shares Dagster's migration scripts on import
import wrk_instance.preload_code  # noqa: F401  (resolves the code location on import)
from orchestration_defs.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def script_parses(monkeypatch):
    """Counts how often alembic parses a migrations directory from now on."""
    parses: list[str] = []
    original = ScriptDirectory._load_revisions

    def counting(self):
        parses.append(self.dir)
        return original(self)

    monkeypatch.setattr(ScriptDirectory, "_load_revisions", counting)
    return parses


def test_a_new_sqlite_instance_and_a_new_run_shard_parse_no_migration_script(tmp_path, script_parses):
    """A forked worker creates its instance from the ref and writes the first event of a run's shard:
    each checks the schema revision, and none parses Dagster's ~90 migration scripts again."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize([dg.asset(name="one")(lambda: 1)], instance=instance)
        assert result.success
        assert instance.get_records_for_run(result.run_id).records
    assert script_parses == []


def test_other_migration_directories_are_read_as_before(script_parses):
    """Only Dagster's own scripts are shared: the project's migrations are parsed on every read."""
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    first, second = ScriptDirectory.from_config(config), ScriptDirectory.from_config(config)
    assert first is not second
    assert first.get_current_head() == second.get_current_head()
    assert len(script_parses) == 2 and all(os.path.samefile(d, ROOT / "migrations") for d in script_parses)


def test_the_code_location_is_resolved_in_the_fork_server():
    """A worker reconstructs its job from the repository the fork server resolved once."""
    assert defs.has_resolved_repository_def()
