"""When liveness looks at a node that has just called home (a pure schedule)."""

from fleet.access.liveness import BOOT_GRACE, boot_check_due


def test_a_new_node_is_checked_within_seconds_then_every_15s_until_the_grace():
    ages = [0.5, 1.9, 2.0, 2.9, 3.0, 4.9, 5.0, 7.9, 8.0, 12.9, 13.0, 27.9, 28.0, 43.0, 58.1]
    assert [boot_check_due(a) for a in ages] == [
        None, None, 2.0, 2.0, 3.0, 3.0, 5.0, 5.0, 8.0, 8.0, 13.0, 13.0, 28.0, 43.0, 58.0]
    assert BOOT_GRACE == 600.0
    assert boot_check_due(599.0) == 598.0
    assert boot_check_due(600.0) == boot_check_due(900.0) == 600.0
    # each check in the schedule comes once: the due offsets only grow
    offsets = [boot_check_due(t / 10) for t in range(0, 6100)]
    seen = [o for i, o in enumerate(offsets) if o is not None and o != offsets[i - 1]]
    assert seen[:6] == [2.0, 3.0, 5.0, 8.0, 13.0, 28.0] and seen == sorted(set(seen))
