"""The Line-API table's bookkeeping: keyed upserts keep sort and filter without a
rebuild, the cursor follows its row, marks and targets."""

from __future__ import annotations

import pytest

from fleet.tui.widgets.linetable import Column, Filter, LineTable, Row

COLS = [Column("name", "Name", 8), Column("n", "N", 4), Column("state", "State", 8)]


def put_cursor(t: LineTable, index: int) -> None:
    """Move the cursor without an app (no Selected message)."""
    t.set_reactive(LineTable.cursor, index)
    t._cursor_key = t.key_at(index)


def table() -> LineTable:
    t = LineTable(COLS, sort_column="name")
    t.replace_all((f"k{i}", (f"host{i:02d}", i, "up" if i % 2 else "down"),
                   {"state": "up" if i % 2 else "down"}) for i in range(20))
    return t


def test_bulk_load_sorted_and_keyed():
    t = table()
    assert t.row_count == 20
    assert t.visible_keys()[:3] == ["k0", "k1", "k2"]
    assert t.index_of("k7") == 7


def test_upsert_moves_row_when_sort_key_changes_and_cursor_follows():
    t = table()
    put_cursor(t, 5)  # k5
    t.upsert("k5", ("zzz", 5, "up"), {"state": "up"})
    assert t.visible_keys()[-1] == "k5"
    assert t.cursor_key == "k5" and t.cursor == 19
    assert 0 in t.changed["k5"][1]  # the name cell is marked as changed
    t.upsert("new", ("aaa", 99, "up"), {"state": "up"})
    assert t.visible_keys()[0] == "new" and t.cursor_key == "k5"
    t.remove("k5")
    assert "k5" not in t.visible_keys() and t.row_count == 20


def test_filter_applies_to_later_upserts():
    t = table()
    t.set_filter("state=up")
    assert t.row_count == 10
    t.upsert("k0", ("host00", 0, "up"), {"state": "up"})
    assert t.row_count == 11 and "k0" in t.visible_keys()
    t.upsert("k1", ("host01", 1, "down"), {"state": "down"})
    assert "k1" not in t.visible_keys()
    t.set_filter("!host1")
    assert all(not t.rows[k].values[0].startswith("host1") for k in t.visible_keys())
    with pytest.raises(ValueError):
        t.set_filter("(")


def test_reverse_sort_and_other_column():
    t = table()
    t.set_sort("n", reverse=True)
    assert t.visible_keys()[0] == "k19"
    assert t.index_of("k19") == 0 and t.key_at(19) == "k0"


def test_targets_are_marks_else_cursor():
    t = table()
    put_cursor(t, 3)
    assert t.targets() == ["k3"]
    t.marks.update({"k9", "k2"})
    assert t.targets() == ["k2", "k9"]


def test_filter_terms():
    row = Row("a", ("web1",), {"role": "web"}, "web1 rack1")
    assert Filter("role=web").matches(row)
    assert not Filter("role!=web").matches(row)
    assert Filter("RACK").matches(row)
    assert not Filter("!rack").matches(row)
    assert Filter("web role=web").matches(row)


def test_replace_all_reconciles_in_one_pass():
    """A full snapshot over a filled table: changed cells marked, new rows in
    order, missing rows (and their marks) gone, the cursor stays on its row."""
    t = table()
    put_cursor(t, 4)  # k4
    t.marks.update({"k3", "k4"})
    rows = [(f"k{i}", (f"host{i:02d}", i, "up" if i % 2 else "down"),
             {"state": "up" if i % 2 else "down"}) for i in range(20) if i != 3]
    rows[0] = ("k0", ("host00", 100, "down"), {"state": "down"})  # n changed
    rows.append(("k20", ("aaa", 20, "up"), {"state": "up"}))
    unchanged = t.rows["k5"]
    t.replace_all(rows)
    assert t.row_count == 20 and "k3" not in t.rows and t.visible_keys()[0] == "k20"
    assert t.changed["k0"][1] == frozenset({1}) and "k5" not in t.changed
    assert t.rows["k5"] is unchanged  # untouched rows are kept as they were
    assert t.marks == {"k4"} and t.cursor_key == "k4"
    t.replace_all(rows)  # the same snapshot again: nothing to do
    assert t.row_count == 20


def test_change_marks_expire():
    now = [1000.0]
    t = LineTable(COLS, sort_column="name", clock=lambda: now[0])
    t.replace_all([("a", ("a", 1, "up"), {})])
    t.upsert("a", ("a", 2, "up"), {})
    assert t.changed["a"][1] == frozenset({1})
    now[0] += 1.0
    t._expire_changes()
    assert "a" in t.changed  # still marked a moment later
    now[0] += 1.0  # past CHANGE_MARK_SECONDS
    t._expire_changes()
    assert "a" not in t.changed


def test_counted_fields_follow_every_change():
    """The header's totals come from counts the table keeps as rows change (no pass
    over 10,000 rows per refresh): they must always equal a recount."""
    import random
    from collections import Counter

    t = LineTable(COLS, sort_column="name", counted=("state",))
    rng = random.Random(7)

    def recount() -> Counter:
        return Counter(r.fields.get("state") for r in t.rows.values())

    t.replace_all((f"k{i}", (f"h{i}", i, "x"), {"state": rng.choice("abc")}) for i in range(50))
    assert t.counts["state"] == recount() and sum(t.counts["state"].values()) == 50
    for _ in range(500):
        key = f"k{rng.randrange(70)}"
        op = rng.random()
        if op < 0.6:
            state = rng.choice("abcd")
            t.upsert(key, (key, 1, state), {"state": state})
        elif op < 0.8:
            t.remove(key)
        else:
            t.replace_all((k, r.values, {"state": rng.choice("ab")})
                          for k, r in list(t.rows.items())[:40])
        assert t.counts["state"] == recount()
        assert all(v > 0 for v in t.counts["state"].values())
