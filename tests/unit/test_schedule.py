"""loader/schedule.py: the row/tag schedule grammar, its errors, and the keyframes it gives.

References: the host's keyframe node arithmetic written out here by hand (CreateHookKeyframesInterpolated:
`keyframes` values of InterpolationMethod.get_weights), and A1111 lora-block-weight's step rule
(`sampling_step > start − 2` switches on, `sampling_step > stop − 2` off, sampling_step counted from 0).
"""

from __future__ import annotations

import math

import pytest

from loader import schedule, stack
from loader.prompt_tags import parse as parse_tags
from loader.schedule import Keyframe, Schedule


def test_absent_or_null_schedule_is_always_on():
    assert stack.rows_from_value([{"lora": "a.safetensors"}])[0].schedule is None
    assert stack.rows_from_value([{"lora": "a.safetensors", "schedule": None}])[0].schedule is None


def test_rows_carry_the_schedule_onto_entries_and_lora_stack_stays_three_tuples():
    rows = stack.rows_from_value([{"lora": "a.safetensors", "schedule": {"start": 0.0, "stop": 0.4}},
                                  {"lora": "b.safetensors"}])
    entries = stack.build_stack(None, rows)
    assert entries[0].schedule == Schedule(0.0, 0.4) and entries[1].schedule is None
    assert [len(e) for e in entries] == [3, 3]
    name, model, clip = entries[0]
    assert (name, model, clip) == ("a.safetensors", 1.0, 1.0)
    again = stack.entries_from_stack(entries)  # another LoRA Deck node reading the stack keeps it
    assert again[0].schedule == entries[0].schedule
    assert stack.entries_from_stack([("c.safetensors", 1.0, 1.0)])[0].schedule is None


def test_the_three_documented_shapes():
    assert schedule.parse({"start": 0.0, "stop": 0.4}, "row 1") == Schedule(0.0, 0.4)
    assert schedule.parse({"start": 0, "stop": 12, "unit": "steps"}, "row 1") == Schedule(0.0, 12.0, "steps")
    ramp = schedule.parse({"start": 0.6, "stop": 1.0, "from": 0.0, "to": 1.0, "curve": "linear", "keyframes": 5},
                          "row 1")
    assert ramp == Schedule(0.6, 1.0, "fraction", 0.0, 1.0, "linear", 5)
    assert schedule.parse({"unit": "steps", "start": 4}, "row 1").stop is None  # to the end
    assert schedule.parse({"from": 0.0, "to": 1.0}, "row 1").curve == "linear"


@pytest.mark.parametrize(("value", "message"), [
    ([0, 1], "row 2: schedule should be an object"),
    ({"begin": 0.1}, "row 2: schedule has unknown key 'begin'"),
    ({"unit": "percent"}, "row 2: schedule unit should be"),
    ({"start": 1.5}, "row 2: schedule start 1.5 is a fraction"),
    ({"start": "0.1"}, "row 2: schedule start '0.1' is not a finite number"),
    ({"stop": float("nan")}, "row 2: schedule stop nan is not a finite number"),
    ({"start": 0.5, "stop": 0.5}, "row 2: schedule stops \\(0.5\\) at or before it starts"),
    ({"start": 2.5, "unit": "steps"}, "row 2: schedule start 2.5 should be a step number"),
    ({"start": True}, "row 2: schedule start True is not a finite number"),
    ({"curve": "cubic", "from": 0, "to": 1}, "row 2: schedule curve should be one of linear, ease_in"),
    ({"curve": "hold", "from": 0, "to": 1}, "row 2: schedule curve \"hold\" keeps one strength"),
    ({"from": 0, "to": 1, "keyframes": 1}, "row 2: schedule keyframes should be a whole number from 2"),
    ({"from": 0, "to": 1, "keyframes": 2.5}, "row 2: schedule keyframes should be a whole number"),
    ({"from": 500}, "row 2: schedule from 500 must lie between"),
])
def test_bad_schedules_name_the_row_and_field(value, message):
    rows = [{"lora": "a.safetensors"}, {"lora": "b.safetensors", "schedule": value}]
    with pytest.raises(stack.StackError, match=message):
        stack.rows_from_value(rows)


def test_start_stop_keyframes():
    assert schedule.keyframes(Schedule(0.0, 0.4)) == [Keyframe(0.0, 1.0), Keyframe(0.4, 0.0)]
    assert schedule.keyframes(Schedule(0.6, 1.0)) == [Keyframe(0.0, 0.0), Keyframe(0.6, 1.0)]
    assert schedule.keyframes(Schedule(0.2, 0.7, strength_from=0.5, strength_to=0.5)) == [
        Keyframe(0.0, 0.0), Keyframe(0.2, 0.5), Keyframe(0.7, 0.0)]


@pytest.mark.parametrize("curve", ["linear", "ease_in", "ease_out", "ease_in_out"])
def test_ramp_keyframes_are_the_hosts_interpolation(curve):
    shape = {"linear": lambda t: t, "ease_in": lambda t: t ** 2, "ease_out": lambda t: 1 - (1 - t) ** 2,
             "ease_in_out": lambda t: (1 - math.cos(t * math.pi)) / 2}[curve]
    frames = schedule.keyframes(Schedule(0.6, 1.0, "fraction", 0.2, 1.0, curve, 5))
    assert frames[0] == Keyframe(0.0, 0.0)
    ramp = frames[1:]
    assert [f.position for f in ramp] == pytest.approx([0.6, 0.68, 0.76, 0.84, 0.92])
    assert [f.strength for f in ramp] == pytest.approx([0.2 + 0.8 * shape(i / 4) for i in range(5)])
    assert [f.guarantee_steps for f in ramp] == [1, 0, 0, 0, 0]  # as CreateHookKeyframesInterpolated


def a1111_active_steps(start, stop, total):
    """Steps (counted from 1) on which lora-block-weight leaves the LoRA on, simulated as its callback does."""
    on = start is None
    active = []
    for sampling_step in range(total):
        if start is not None and sampling_step > start - 2:
            on = True
        if stop is not None and sampling_step > stop - 2:
            on = False
        if on:
            active.append(sampling_step + 1)
    return active


@pytest.mark.parametrize(("start", "stop"), [(3, 6), (0, 4), (1, None), (5, None), (None, 2), (2, 30), (8, 9)])
def test_step_keyframes_mean_a1111_steps(start, stop):
    total = 8
    entry = schedule.from_steps(start, stop)
    frames = schedule.keyframes(entry, total)
    active = []
    for index in range(total):
        strength = [f.strength for f in frames if f.position <= index][-1]
        if strength:
            active.append(index + 1)
    assert active == a1111_active_steps(start, stop, total)


def test_prompt_tag_steps_become_the_entry_schedule():
    _, tags = parse_tags("a <lora:x:0.8:start=3:stop=10> b <lora:y:1> <lora:z:1:step=5-9>")
    entries = [t.entry() for t in tags]
    assert entries[0].schedule == Schedule(3.0, 10.0, "steps")
    assert entries[1].schedule is None
    assert entries[2].schedule == Schedule(5.0, 9.0, "steps")
    assert stack.entries_from_stack(entries)[0].schedule == entries[0].schedule


def test_always_on_and_json_round_trip():
    assert Schedule(0.0, 1.0).always_on() and Schedule(1.0, None, "steps").always_on()
    assert not Schedule(0.0, 0.9).always_on() and not Schedule(0.0, 1.0, strength_from=0.5).always_on()
    for value in ({"start": 0.25, "stop": 0.5}, {"start": 2, "stop": 12, "unit": "steps"},
                  {"start": 0.6, "stop": 1.0, "from": 0.0, "to": 1.0, "curve": "ease_in", "keyframes": 7}):
        parsed = schedule.parse(value, "row 1")
        assert schedule.parse(parsed.to_json(), "row 1") == parsed
