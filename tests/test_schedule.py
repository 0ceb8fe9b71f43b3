"""τ schedules (hf_topo.schedule): parsing, values at key steps, serialization, errors."""

import json
import math

import pytest

from hf_topo import TauPhase, TauSchedule, TopoConfig


def test_chain_values_at_key_steps():
    schedule = TauSchedule.parse("warmup:10,constant:5,cosine:10:0.1")
    assert [p.kind for p in schedule.phases] == ["linear", "constant", "cosine"]
    expected = {
        0: 0.0,  # warmup starts at 0
        5: 0.5,
        9: 0.9,
        10: 1.0,  # constant phase
        14: 1.0,
        15: 1.0,  # cosine starts at the current multiplier
        20: 0.1 + 0.9 * 0.5,  # cosine midpoint
        25: 0.1,  # end of the chain: the last multiplier holds
        26: 0.1,
        10_000: 0.1,
    }
    for step, value in expected.items():
        assert schedule.multiplier(step) == pytest.approx(value, abs=1e-12), step


def test_cosine_shape_and_endpoints():
    schedule = TauSchedule.parse("cosine:8")  # from 1 to the default end 0
    assert schedule.multiplier(0) == 1.0
    assert schedule.multiplier(2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule.multiplier(4) == pytest.approx(0.5)
    assert schedule.multiplier(8) == 0.0 and schedule.multiplier(100) == 0.0
    values = [schedule.multiplier(s) for s in range(9)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))  # strictly decreasing
    rising = TauSchedule.parse("linear:2:0:0.2,cosine:4:1")  # cosine from the current 0.2 up to 1
    assert [rising.multiplier(s) for s in (2, 4, 6)] == pytest.approx([0.2, 0.6, 1.0])


def test_linear_and_constant_phases():
    schedule = TauSchedule.parse("linear:4:2:0,constant:3,warmup:2")
    assert [schedule.multiplier(s) for s in range(10)] == pytest.approx([2, 1.5, 1, 0.5, 0, 0, 0, 0, 0.5, 1])
    # A constant phase holds the multiplier reached so far; without steps it is open ended.
    held = TauSchedule.parse("warmup:2,constant")
    assert held.phases[-1].steps is None and held.multiplier(10**9) == 1.0
    for spec in (None, "", "  ", "constant"):
        schedule = TauSchedule.parse(spec)
        assert schedule == TauSchedule() and schedule.multiplier(0) == schedule.multiplier(10**6) == 1.0
    assert TauSchedule.parse("constant:5").multiplier(100) == 1.0
    assert TauSchedule.parse(" warmup : 4 , cosine : 4 : 0.5 ").multiplier(6) == pytest.approx(0.75)


def test_round_trip_through_lists_and_json():
    schedule = TauSchedule.parse("warmup:10,constant:5,cosine:10:0.1,constant")
    data = json.loads(json.dumps(schedule.to_list()))
    assert data[0] == {"kind": "linear", "steps": 10, "start": 0.0, "end": 1.0}
    assert data[-1] == {"kind": "constant", "steps": None, "start": 0.1, "end": 0.1}
    back = TauSchedule.from_list(data)
    assert back == schedule
    assert [back.multiplier(s) for s in range(30)] == [schedule.multiplier(s) for s in range(30)]
    assert TauSchedule.from_list(None) == TauSchedule.from_list([]) == TauSchedule()
    assert (
        schedule.describe()
        == "linear(0→1, 10 steps) → constant(1→1, 5 steps) → cosine(1→0.1, 10 steps) → constant(0.1→0.1)"
    )
    assert TauSchedule().describe() == "constant"


@pytest.mark.parametrize(
    "spec, shown",
    [
        ("cosine", "'cosine'"),  # cosine needs a length
        ("warmup", "'warmup'"),
        ("warmup:10:1", "'warmup:10:1'"),
        ("linear:10:0", "'linear:10:0'"),
        ("ramp:10", "'ramp:10'"),  # unknown kind
        ("warmup:ten", "'warmup:ten'"),  # not a number
        ("warmup:10,,cosine:5", "''"),  # empty phase
        ("cosine:10:-1", "'cosine:10:-1'"),  # negative multiplier
        ("linear:5:nan:1", "'linear:5:nan:1'"),
    ],
)
def test_bad_specs_say_what_is_expected(spec, shown):
    with pytest.raises(ValueError) as info:
        TauSchedule.parse(spec)
    message = str(info.value)
    assert f"Cannot read τ schedule phase {shown}" in message
    assert "'warmup:STEPS'" in message and "'cosine:STEPS[:END]'" in message and "e.g." in message


def test_phase_validation():
    with pytest.raises(ValueError, match=r"steps >= 1 \(got 0\)"):
        TauSchedule.parse("warmup:0")
    with pytest.raises(ValueError, match="Unknown τ phase kind 'exp'"):
        TauPhase("exp", 3, 0.0, 1.0)
    with pytest.raises(ValueError, match="end multiplier must be a finite number >= 0"):
        TauPhase("linear", 3, 0.0, float("inf"))
    with pytest.raises(ValueError, match="Only the last τ phase may be open ended"):
        TauSchedule.parse("constant,warmup:3")
    with pytest.raises(ValueError, match="Only the last τ phase may be open ended"):
        TauSchedule.from_list([{"kind": "constant", "steps": None, "start": 1.0, "end": 1.0}] * 2)


def test_tau_at_combines_base_tau_and_schedule():
    config = TopoConfig(tau=4.0, tau_schedule="linear:4:1:0")
    assert [config.tau_at(s) for s in range(6)] == pytest.approx([4.0, 3.0, 2.0, 1.0, 0.0, 0.0])
    assert TopoConfig(tau=2.5).tau_at(10**6) == 2.5
    assert TopoConfig(tau_schedule=TauSchedule.parse("warmup:2")).tau_at(1) == 0.5
    with pytest.raises(ValueError, match="Cannot read τ schedule phase"):
        TopoConfig(tau_schedule="warmup")


# ---- the authors' topoloss scheduler JSON (topoloss main: TauScheduler, ChainedTauScheduler) ----------------------


def _topoloss_tau(entries, step):
    """τ of topoloss main's ChainedTauScheduler after ``step`` calls of ``step()`` (its ``get_current_tau()``), restated
    from its scheduler.py: find the ramp that holds ``step``, else the last ramp at its ``num_steps``; a linear ramp is
    ``start + (end − start)·k/n`` (``end`` once ``k >= n``), a cosine decay ``end + (start − end)·½(1 + cos(πk/n))``."""
    remaining = step
    for entry in entries:
        if remaining < entry["num_steps"]:
            break
        remaining -= entry["num_steps"]
    else:
        entry, remaining = entries[-1], entries[-1]["num_steps"]
    start, end, n = entry["start_value"], entry["end_value"], entry["num_steps"]
    if entry["mode"] == "cosine_decay":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * remaining / n))
    return end if remaining >= n else start + (end - start) * remaining / n


# The README example of topoloss main (linear warmup, then cosine decay), as ChainedTauScheduler.save_json writes it.
TOPOLOSS_README_CHAIN = [
    {"start_value": 0.0, "end_value": 1.0, "num_steps": 100, "mode": "linear"},
    {"start_value": 1.0, "end_value": 0.0, "num_steps": 100, "mode": "cosine_decay"},
]


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_topoloss_chain_gives_the_same_tau_at_every_step(tmp_path, tau):
    chain = [{k: v * tau if k.endswith("_value") else v for k, v in e.items()} for e in TOPOLOSS_README_CHAIN]
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps(chain, indent=4))
    config = TopoConfig(tau=tau, tau_schedule=TauSchedule.from_topoloss_json(path, tau=tau))
    for step in range(0, 260):
        assert config.tau_at(step) == pytest.approx(_topoloss_tau(chain, step), rel=1e-12, abs=1e-12), step
    assert config.tau_at(10**6) == pytest.approx(0.0, abs=1e-12)
    assert config.tau_at(50) == pytest.approx(0.5 * tau) and config.tau_at(150) == pytest.approx(0.5 * tau)


def test_our_schedule_written_for_topoloss_gives_the_same_tau(tmp_path):
    schedule = TauSchedule.parse("warmup:10,constant:5,cosine:10:0.1,linear:4:0.1:0.3,constant")
    path = tmp_path / "chain.json"
    schedule.save_topoloss_json(path, tau=4.0)
    written = json.loads(path.read_text())
    assert written == [
        {"start_value": 0.0, "end_value": 4.0, "num_steps": 10, "mode": "linear"},
        {"start_value": 4.0, "end_value": 4.0, "num_steps": 5, "mode": "linear"},
        {"start_value": 4.0, "end_value": pytest.approx(0.4), "num_steps": 10, "mode": "cosine_decay"},
        {"start_value": pytest.approx(0.4), "end_value": pytest.approx(1.2), "num_steps": 4, "mode": "linear"},
        {"start_value": pytest.approx(1.2), "end_value": pytest.approx(1.2), "num_steps": 1, "mode": "linear"},
    ]
    for step in range(0, 60):
        assert 4.0 * schedule.multiplier(step) == pytest.approx(_topoloss_tau(written, step), rel=1e-12), step
    # Read back: the same multipliers at every step, and the same phases except the open-ended tail (one held step).
    back = TauSchedule.from_topoloss_json(path, tau=4.0)
    assert [back.multiplier(s) for s in range(60)] == pytest.approx([schedule.multiplier(s) for s in range(60)])
    for ours, read in zip(schedule.phases[:4], back.phases[:4], strict=True):
        assert (read.kind, read.steps) == (ours.kind, ours.steps)
        assert (read.start, read.end) == pytest.approx((ours.start, ours.end), abs=1e-15)
    tail = back.phases[4]
    assert (tail.kind, tail.steps, tail.start, tail.end) == ("constant", 1, pytest.approx(0.3), pytest.approx(0.3))
    # topoloss -> hf_topo -> topoloss is exact.
    assert TauSchedule.from_topoloss(TOPOLOSS_README_CHAIN).to_topoloss() == TOPOLOSS_README_CHAIN
    assert TauSchedule().to_topoloss(2.0) == [{"start_value": 2.0, "end_value": 2.0, "num_steps": 1, "mode": "linear"}]
    assert TopoConfig(tau=2.0).tau_at(7) == 2.0 == _topoloss_tau(TauSchedule().to_topoloss(2.0), 7)


def test_single_topoloss_scheduler():
    # A single linear TauScheduler holds end_value after num_steps, as ours does.
    single = {"start_value": 0.2, "end_value": 1.0, "num_steps": 8, "mode": "linear"}
    schedule = TauSchedule.from_topoloss(single)
    assert [schedule.multiplier(s) for s in range(12)] == pytest.approx(
        [_topoloss_tau([single], s) for s in range(12)]
    )
    assert schedule.phases == (TauPhase("linear", 8, 0.2, 1.0),)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"start_value": 1.0, "end_value": 0.0, "num_steps": 8, "mode": "cosine_decay"}, "keeps following the cosine"),
        ([{"start_value": 0.0, "end_value": 1.0, "num_steps": 8, "mode": "cosine_decay"}], "needs end_value < start"),
        ([{"start_value": 0.0, "end_value": 1.0, "num_steps": 0, "mode": "linear"}], "num_steps=0"),
        ([{"start_value": 0.0, "end_value": 1.0, "num_steps": 4, "mode": "step"}], "mode='step'"),
        ([{"start_value": 0.0, "end_value": 1.0, "num_steps": 4}], "expected exactly the keys"),
        ([{"start_value": -1.0, "end_value": 1.0, "num_steps": 4, "mode": "linear"}], "finite number >= 0"),
        ([], "non-empty list"),
    ],
)
def test_topoloss_schedules_we_cannot_express_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        TauSchedule.from_topoloss(data)


def test_our_schedules_topoloss_cannot_express_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"cosine from 0.2 to 1.*only decays"):
        TauSchedule.parse("linear:2:0:0.2,cosine:4:1").to_topoloss()
    with pytest.raises(ValueError, match="constant at 1 but ends at 0.5"):
        TauSchedule((TauPhase("constant", 3, 1.0, 0.5),)).to_topoloss()
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        TauSchedule.from_topoloss(TOPOLOSS_README_CHAIN, tau=0.0)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        TauSchedule.from_topoloss_json(bad)
