"""What a console learns from one look at its replica (a real replica file):
a site's new events once each and in order, a re-read of its rows only when its
snapshot moved or it came or went, nothing for a site that did not change."""

from __future__ import annotations

from fleet.sites.changes import SiteWatch
from fleet.sites.replica_store import ReplicaStore


def event(i: int) -> dict:
    return {"id": i, "ts": "2026-12-06T10:00:00.000Z", "kind": "machine.discovered",
            "subject": f"ac:1f:6b:00:00:{i:02x}", "severity": "info",
            "message": f"new machine {i}", "data": {}}


def machine(i: int, state: str = "discovered") -> dict:
    return {"mac": f"ac:1f:6b:00:00:{i:02x}", "state": state}


async def test_new_events_once_rows_when_the_snapshot_moves(tmp_path):
    store = await ReplicaStore.open(tmp_path / "replica.db")
    try:
        await store.heard("rack2", 100.0, last_event_id=2)
        await store.apply_events("rack2", [event(1), event(2)], 100.0)
        await store.heard("rack3", 100.0, last_event_id=0)
        watch = SiteWatch(store, ["rack2", "rack3"])
        first = await watch.start(events=1)
        assert [e.id for e in first["rack2"]] == [2] and first["rack3"] == []
        assert await watch.poll() == []  # nothing moved

        await store.apply_events("rack2", [event(3), event(4)], 101.0)
        changes = await watch.poll()
        assert [(c.site, c.rows, [e.id for e in c.events]) for c in changes] == [
            ("rack2", False, [3, 4])]
        assert changes[0].events[0].subject == "ac:1f:6b:00:00:03"
        assert await watch.poll() == []  # each event once

        await store.replace_rows("rack2", [machine(3, "leased")], [], 4, 102.0)
        assert [(c.site, c.rows, c.events) for c in await watch.poll()] == [
            ("rack2", True, [])]

        await store.lost("rack3", 103.0, "Connection refused")  # went away: rows go stale
        changes = await watch.poll()
        assert [(c.site, c.rows, c.row.connected) for c in changes] == [
            ("rack3", True, False)]

        await store.heard("rack2", 104.0)  # a heartbeat: the row moved, its rows did not
        assert [(c.site, c.rows) for c in await watch.poll()] == [("rack2", False)]

        await store.start_over("rack2", "new-store")  # replicated again from event 0
        await store.apply_events("rack2", [event(1)], 105.0)
        changes = await watch.poll()
        assert [(c.site, c.rows, [e.id for e in c.events]) for c in changes] == [
            ("rack2", True, [1])]
    finally:
        await store.close()
