"""wrk_instance/schedule_storage.py: the SQLite schedule storage dagster.yaml names keeps the answers
about its own schema once they are yes, and builds its engine once; what it stores and answers is
Dagster's."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy
import yaml
from dagster._core.storage.schedules import sql_schedule_storage

from wrk_instance.schedule_storage import KeptSchemaScheduleStorage

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = {"schedule_storage": {"module": "wrk_instance.schedule_storage", "class": "KeptSchemaScheduleStorage"}}


def test_dagster_still_asks_sqlite_for_its_table_list():
    assert "db.inspect(conn).get_table_names()" in __import__("inspect").getsource(sql_schedule_storage)


def test_the_single_machine_instance_names_it():
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert {k: config["schedule_storage"][k] for k in ("module", "class")} == OVERRIDES["schedule_storage"]


def test_a_storage_reads_its_schema_once_and_answers_as_dagster_does(tmp_path, monkeypatch):
    with dg.instance_for_test(overrides=OVERRIDES, temp_dir=str(tmp_path)) as instance:
        storage = instance.schedule_storage
        assert isinstance(storage, KeptSchemaScheduleStorage)
        assert (tmp_path / "schedules" / "schedules.db").exists()  # Dagster's own default place
        storage = KeptSchemaScheduleStorage(storage._conn_string)  # nothing known yet
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
