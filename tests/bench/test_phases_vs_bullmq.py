"""The peer bench's arithmetic: per-round ratios against each peer, their medians over the rounds, the
JSON lines they are printed as, and the stage breakdown of a trigger on either path (a run launched for
its claim, or a run that claimed it itself)."""

from __future__ import annotations

import json

import pytest

from bench.common import emit
from bench.phases_vs_bullmq import Figures, median_ratios, round_ratios, target_of
from bench.stages import TriggerTimes, stage_figures, stages


def test_a_round_is_ours_over_each_peer_the_everysec_one_under_the_plain_names():
    figures = {
        "ours": Figures(latency_p95_s=3.0, drain_per_s=200.0, post_p99_ms=30.0),
        "peer_everysec": Figures(latency_p95_s=0.01, drain_per_s=400.0, post_p99_ms=20.0),
        "peer_nopersist": Figures(latency_p95_s=0.02, drain_per_s=500.0, post_p99_ms=60.0),
    }
    assert round_ratios(figures) == pytest.approx(
        {
            "phase_latency_p95_ratio": 300.0,
            "phase_drain_ratio": 0.5,
            "phase_post_p99_ratio": 1.5,
            "phase_latency_p95_ratio.nopersist": 150.0,
            "phase_drain_ratio.nopersist": 0.4,
            "phase_post_p99_ratio.nopersist": 0.5,
        }
    )


def test_the_summary_is_each_ratios_median_with_its_range_and_target():
    rounds = [{"phase_drain_ratio": 0.4}, {"phase_drain_ratio": 1.2}, {"phase_drain_ratio": 0.5}]
    assert median_ratios(rounds) == {"phase_drain_ratio": (0.5, 0.4, 1.2)}
    assert target_of("phase_drain_ratio.nopersist") == ">= 1.0"
    assert target_of("phase_latency_p95_ratio") == "<= 10"


def test_a_figure_is_one_json_line_with_the_bench_fields(capsys: pytest.CaptureFixture[str]):
    emit("phases_vs_bullmq", "phase_post_p99_ratio", 1.23456, "ratio", "<= 1.0", rounds=3)
    line = json.loads(capsys.readouterr().out)
    assert line == {
        "bench": "phases_vs_bullmq",
        "metric": "phase_post_p99_ratio",
        "value": 1.235,
        "unit": "ratio",
        "target": "<= 1.0",
        "rounds": 3,
    }


def test_a_trigger_whose_run_was_launched_for_it_goes_through_every_run_stage():
    times = TriggerTimes(
        created=100.0,
        claimed=100.5,
        run_created=100.6,
        run_starting=101.4,
        run_start=101.8,
        step_start=102.1,
        work_start=102.3,
        work_end=102.35,
        seen=102.4,
    )
    assert stages(times) == pytest.approx(
        {
            "post_to_claim": 500.0,
            "claim_to_run_created": 100.0,
            "run_queued": 800.0,
            "run_process_start": 400.0,
            "run_to_step": 300.0,
            "step_to_work": 200.0,
            "work": 50.0,
            "completion_to_stream": 50.0,
            "total": 2400.0,
        }
    )


def test_a_trigger_taken_by_a_run_already_working_goes_from_claim_to_work():
    # The run was created before this trigger was claimed: it claimed the trigger itself.
    times = TriggerTimes(
        created=100.0,
        claimed=100.01,
        run_created=50.0,
        run_starting=51.0,
        run_start=52.0,
        step_start=53.0,
        work_start=100.02,
        work_end=100.07,
        seen=100.08,
    )
    assert stages(times) == pytest.approx(
        {"post_to_claim": 10.0, "claim_to_work": 10.0, "work": 50.0, "completion_to_stream": 10.0, "total": 80.0}
    )
    assert stage_figures([stages(times), stages(times)])["work"] == pytest.approx((50.0, 50.0, 2))
