"""Several fleet processes opening the same brand-new store at the same moment
(`serve` starting while a script asks for `machines`) all succeed: creating,
switching to WAL and migrating a fresh file never fails with "database is locked".

Real separate processes: each walks the same rounds, and in each round all of
them open a fresh store at one agreed instant, so their opens coincide."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from support.profiles import write_profile

ROUNDS = 40
PROCESSES = 3

CHILD = textwrap.dedent("""
    import asyncio, json, sys, time
    from fleet.engine import Engine
    from fleet.headless.commands import machines
    from fleet.headless.output import Output

    async def once(profile, role):
        engine = await Engine.open(profile)
        try:
            if role == "reader":
                await machines(engine, type("Args", (), {"state": None})(), Output("json"))
            else:
                await engine.machines()
        finally:
            await engine.close()

    def main(start, gap, role, profiles):
        failures = []
        for i, profile in enumerate(profiles):
            time.sleep(max(0.0, start + i * gap - time.time()))
            try:
                asyncio.run(once(profile, role))
            except BaseException as err:
                failures.append(f"round {i}: {type(err).__name__}: {err}")
        print("RESULT " + json.dumps(failures))

    main(float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4:])
""")


def test_simultaneous_opens_of_a_fresh_store_never_fail(tmp_path, xdg):
    profiles = []
    for i in range(ROUNDS):
        folder = tmp_path / f"round{i}"
        folder.mkdir()
        profiles.append(str(write_profile(folder)))
    gap = 0.4
    start = time.time() + 4  # every child has imported fleet by then
    roles = ["serve", "reader", "serve"][:PROCESSES]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(start), str(gap), role, *profiles],
                              env=xdg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in roles]
    failures = []
    for proc in procs:
        out, err = proc.communicate(timeout=ROUNDS * gap + 120)
        result = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and result, err
        failures += json.loads(result[0][len("RESULT "):])
    assert failures == []
    # every round ended with one migrated store, usable by the next process
    for profile in profiles:
        db = profile.replace("t.yaml", "t.db")
        out = subprocess.run([sys.executable, "-c",
                              "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
                              "print(c.execute('PRAGMA user_version').fetchone()[0],"
                              " c.execute('PRAGMA journal_mode').fetchone()[0])", db],
                             capture_output=True, text=True, check=True).stdout.split()
        assert out[1] == "wal" and int(out[0]) >= 1, (db, out)
