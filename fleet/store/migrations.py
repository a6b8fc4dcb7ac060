"""Schema migrations, applied in order; `PRAGMA user_version` records the last one.

Append a new entry to MIGRATIONS to change the schema; never edit an old one.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        state_since REAL NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        uuid TEXT, arch TEXT NOT NULL, vendor_class TEXT, nic_vendor TEXT,
        ipxe_version TEXT, ipxe_busid TEXT, distributor TEXT, interface TEXT,
        last_ip TEXT, stage TEXT, reason TEXT,
        info TEXT NOT NULL DEFAULT '{}',
        lease_id INTEGER REFERENCES leases(id)
    );
    CREATE INDEX machines_state ON machines(state);

    CREATE TABLE leases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mac TEXT NOT NULL,
        deployment TEXT NOT NULL,
        hostname TEXT NOT NULL,
        address TEXT,
        created_at REAL NOT NULL,
        install_started_at REAL, completed_at REAL, ended_at REAL, token_used_at REAL
    );
    CREATE INDEX leases_mac ON leases(mac);

    CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        site TEXT, address TEXT, public_ipv4 TEXT, ipv6 TEXT,
        port INTEGER NOT NULL DEFAULT 22, user TEXT,
        labels TEXT NOT NULL DEFAULT '{}',
        source TEXT NOT NULL, mac TEXT, registered_at REAL,
        reachability TEXT NOT NULL DEFAULT 'unknown', last_seen REAL, last_error TEXT
    );

    CREATE TABLE host_keys (
        node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
        key_type TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
        source TEXT NOT NULL, added_at REAL NOT NULL,
        PRIMARY KEY (node, key_type)
    );

    CREATE TABLE distributors (
        name TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE distributor_artifacts (
        distributor TEXT NOT NULL, artifact TEXT NOT NULL,
        PRIMARY KEY (distributor, artifact)
    );

    CREATE TABLE artifacts (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
        sha256 TEXT NOT NULL, size INTEGER NOT NULL, version TEXT,
        created_at REAL NOT NULL, meta TEXT NOT NULL DEFAULT '{}'
    );

    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL, state TEXT NOT NULL, inputs TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0, phase TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        result TEXT, error TEXT, owner_pid INTEGER
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE job_logs (
        job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, ts REAL NOT NULL, line TEXT NOT NULL,
        PRIMARY KEY (job, seq)
    );

    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
        severity TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_subject ON events(subject);
    """,
    # 2: when a node began booting (its call-home, or a demo machine powering on
    # from disk): liveness gives it a grace from then
    """
    ALTER TABLE nodes ADD COLUMN booting_since REAL;
    """,
    # 3: idempotency keys of commands that came in through a site agent: a
    # retry with the same key gets the first result instead of acting twice
    """
    CREATE TABLE command_keys (
        key TEXT PRIMARY KEY,
        op TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT NOT NULL,
        by TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX command_keys_created ON command_keys(created_at);
    """,
]
