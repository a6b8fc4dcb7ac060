"""The machine lifecycle: legal paths, idempotence, and no illegal state ever."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.core import lifecycle as lc
from fleet.core.arch import FirmwareArch
from fleet.core.durations import format_duration
from fleet.core.model import MachineState as S


def fresh(now=0.0):
    return lc.discover("52:54:00:00:00:01", now, arch=FirmwareArch.BIOS).machine


def test_happy_path_produces_events_with_durations():
    m = fresh()
    t = lc.apply(m, lc.LeaseOp(1, "debian12", "web1", "10.0.0.5"), 10)
    assert t.machine.state is S.LEASED and t.events[0].kind == "machine.leased"
    t = lc.apply(t.machine, lc.InstallStarted(), 40)
    assert t.machine.state is S.PROVISIONING
    t = lc.apply(t.machine, lc.CallHome(), 40 + 421)
    assert t.machine.state is S.PROVISIONED
    assert "provisioned debian12 in 7m1s" in t.events[0].message
    assert t.events[0].data["duration"] == 421
    t = lc.apply(t.machine, lc.Release(wipe=True), 500)
    assert t.machine.state is S.WIPING and t.machine.lease is None
    t = lc.apply(t.machine, lc.WipeDone(), 530)
    assert t.machine.state is S.DISCOVERED
    assert "wiped in 30s" in t.events[0].message


@pytest.mark.parametrize("op", [
    lc.LeaseOp(1, "debian12", "web1"), lc.InstallStarted(), lc.CallHome(),
    lc.Release(), lc.Release(wipe=True), lc.WipeDone(), lc.Fail("x"), lc.Stall("y"),
])
def test_repeating_a_successful_operation_is_a_no_op(op):
    m = lc.apply(fresh(), lc.LeaseOp(1, "debian12", "web1"), 1).machine
    for state_prep in ([], [lc.InstallStarted()]):
        cur = m
        for p in state_prep:
            cur = lc.apply(cur, p, 2).machine
        try:
            first = lc.apply(cur, op, 3)
        except lc.IllegalTransition:
            continue
        second = lc.apply(first.machine, op, 4)
        assert second.machine == first.machine
        assert second.events == ()


def test_leasing_a_leased_machine_differently_is_refused_with_a_reason():
    m = lc.apply(fresh(), lc.LeaseOp(1, "debian12", "web1"), 1).machine
    with pytest.raises(lc.IllegalTransition, match="already leased to debian12 as web1"):
        lc.apply(m, lc.LeaseOp(2, "rocky9", "web2"), 2)


def test_callhome_on_a_discovered_machine_is_illegal():
    with pytest.raises(lc.IllegalTransition, match="not expected"):
        lc.apply(fresh(), lc.CallHome(), 1)


def test_stalled_install_can_still_finish():
    m = lc.apply(fresh(), lc.LeaseOp(1, "d", "h"), 1).machine
    m = lc.apply(m, lc.Stall("no progress for 30m"), 1801).machine
    assert m.state is S.STALLED and m.reason
    m = lc.apply(m, lc.CallHome(), 1900).machine
    assert m.state is S.PROVISIONED and m.reason is None


@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (59.6, "1m"), (61, "1m1s"), (421, "7m1s"), (3600, "1h"),
    (3660, "1h1m"), (90000, "1d1h"), (-5, "0s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


operations = st.one_of(
    st.builds(lc.LeaseOp, st.integers(1, 5), st.sampled_from(["a", "b"]),
              st.sampled_from(["h1", "h2"]), st.sampled_from([None, "10.0.0.9"])),
    st.just(lc.InstallStarted()), st.just(lc.CallHome()),
    st.builds(lc.Release, st.booleans()), st.just(lc.WipeDone()),
    st.builds(lc.Fail, st.sampled_from(["disk", "net"])),
    st.builds(lc.Stall, st.just("slow")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), operations), max_size=60))
def test_no_sequence_reaches_an_illegal_state_or_loses_a_machine(steps):
    macs = [f"52:54:00:00:00:{i:02x}" for i in range(3)]
    machines = {mac: lc.discover(mac, 0.0).machine for mac in macs}
    now = 0.0
    for index, op in steps:
        now += 1.0
        mac = macs[index]
        before = machines[mac]
        try:
            t = lc.apply(before, op, now)
        except lc.IllegalTransition as err:
            assert str(err)  # always says why
            continue
        after = t.machine
        assert after.mac == mac
        assert lc.is_consistent(after), after
        # events iff something changed; each event names the machine and new state
        assert bool(t.events) == (after != before)
        for event in t.events:
            assert event.subject == mac and event.data["state"] == after.state.value
        # idempotence: the same operation again changes nothing
        again = lc.apply(after, op, now + 0.5)
        assert again.machine == after and again.events == ()
        machines[mac] = after
    assert sorted(machines) == macs
    assert all(lc.is_consistent(m) for m in machines.values())
