"""orchestration_defs/schedule_storage.py: Dagster's SQLite schedule storage keeps the answers about its
own schema once they are yes, and builds its engine once; what it stores and answers is Dagster's."""

from __future__ import annotations

import dagster as dg
import sqlalchemy
from dagster._core.storage.schedules import sql_schedule_storage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage

from orchestration_defs.schedule_storage import keep_schedule_schema


def test_dagster_still_has_what_the_patch_replaces():
    for name in ("connect", "_has_instigators_table", "has_secondary_index_table", "has_built_index"):
        assert callable(getattr(SqliteScheduleStorage, name)), name
    assert "db.inspect(conn).get_table_names()" in __import__("inspect").getsource(sql_schedule_storage)


def test_a_storage_reads_its_schema_once_and_answers_as_dagster_does(tmp_path, monkeypatch):
    keep_schedule_schema()
    keep_schedule_schema()  # applied twice (the launcher and the code location): once
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert isinstance(instance.schedule_storage, SqliteScheduleStorage)
        storage = SqliteScheduleStorage(instance.schedule_storage._conn_string)  # nothing known yet
        asked: list[object] = []
        real = sqlalchemy.inspect
        monkeypatch.setattr(sql_schedule_storage.db, "inspect", lambda target: asked.append(target) or real(target))
        first = (storage.has_instigators_table(), storage.has_secondary_index_table())
        asked_first = len(asked)
        for _ in range(3):  # three more ticks' worth of questions
            assert (storage.has_instigators_table(), storage.has_secondary_index_table()) == first
        assert first == (True, True) and asked_first >= 1 and len(asked) == asked_first
        engines = set()
        for _ in range(3):
            with storage.connect() as conn:
                engines.add(id(conn.engine))
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        assert len(engines) == 1
        # What a sensor tick writes still reads back.
        assert instance.all_instigator_state() == []
