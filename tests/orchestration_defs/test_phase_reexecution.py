"""A phase worker re-executed from the Dagster UI: Dagster copies the parent run's tags to the new run, so
it would start with its parent's count, phases, tenants and retiring mark (the sensor would not count a
"retiring" copy as live). The worker says its own from the start: what it took, nothing of its parent's."""

from __future__ import annotations

import dagster as dg

from domain.core.settings import get_settings
from orchestration_defs.phases import (
    TAG_COUNT,
    TAG_PHASE,
    TAG_PHASE_TENANTS,
    TAG_PHASES,
    TAG_RETIRING,
    phase_worker,
    run_tags,
    user_tag,
)
from tests.orchestration_defs.test_phases import _accept, _resources, _state


def _parent(instance, engine, tenant, database_url) -> dg.DagsterRun:
    """A worker that took two triggers (phases 1 and 2) and tagged itself retiring."""
    _accept(engine, tenant, 1, user_id="zoë", sync_id="s0", seller_id="sel")
    _accept(engine, tenant, 2, user_id="zoë", sync_id="s0")
    result = phase_worker.execute_in_process(instance=instance, tags=run_tags(), resources=_resources(database_url))
    assert result.success
    instance.add_run_tags(result.run_id, {TAG_RETIRING: "true"})
    parent = instance.get_run_by_id(result.run_id)
    assert (parent.tags[TAG_COUNT], parent.tags[TAG_PHASES], parent.tags[TAG_PHASE_TENANTS]) == ("2", "1,2", tenant)
    return parent


def _rerun(instance, parent: dg.DagsterRun, database_url) -> dg.DagsterRun:
    """Its re-execution, with the tags Dagster gives one: the parent's, and the parent and root run ids."""
    tags = {**parent.tags, "dagster/parent_run_id": parent.run_id, "dagster/root_run_id": parent.run_id}
    result = phase_worker.execute_in_process(instance=instance, tags=tags, resources=_resources(database_url))
    assert result.success
    return instance.get_run_by_id(result.run_id)


def test_a_re_executed_worker_that_takes_nothing_shows_none_of_its_parents_triggers(
    phase_env, engine, tenant, database_url
):
    instance = dg.DagsterInstance.ephemeral()
    parent = _parent(instance, engine, tenant, database_url)
    tags = _rerun(instance, parent, database_url).tags
    assert (tags[TAG_COUNT], tags[TAG_PHASES], tags[TAG_PHASE], tags[TAG_PHASE_TENANTS]) == ("0", "", "", "")
    assert tags[TAG_RETIRING] == "false"  # the sensor counts it as the live worker it is
    assert tags["dagster/parent_run_id"] == parent.run_id  # the UI's link to what it re-executed stays
    assert tags[user_tag("zoë")] == "zoë"  # Dagster never removes a tag: the parent's users stay
    assert instance.get_run_by_id(parent.run_id).tags[TAG_COUNT] == "2"  # the parent's own are untouched


def test_a_re_executed_worker_counts_what_it_takes_itself(phase_env, engine, tenant, database_url):
    instance = dg.DagsterInstance.ephemeral()
    parent = _parent(instance, engine, tenant, database_url)
    trigger_id = _accept(engine, tenant, 3, user_id="ümit-🦊", sync_id="s1")
    run = _rerun(instance, parent, database_url)
    assert _state(engine, trigger_id).run_id == run.run_id
    tags = run.tags
    assert (tags[TAG_COUNT], tags[TAG_PHASES], tags[TAG_PHASE], tags[TAG_PHASE_TENANTS]) == ("1", "3", "3", tenant)
    assert tags[user_tag("ümit-🦊")] == "ümit-🦊"
    assert get_settings().phase_run_max_triggers > 2  # one trigger taken: far from retiring
    assert tags[TAG_RETIRING] == "false"
