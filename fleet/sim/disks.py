"""The demo machines' disks, kept on the operator's disk so that a restarted
demo brings its provisioned machines back: they boot from disk into the same
OS, with the same host key, as real servers do after a power cut.

    disks = DiskShelf(data_dir / "demo" / "disks" / profile_name)
    disks.save(mac, disk)      # after an install
    disks.load(mac)            # at power-on: the Disk, or None (never installed)
    disks.erase(mac)           # after a wipe

One folder per machine (0700): `os.json` (hostname, deployment, address,
authorized keys, the key it called home with) and `host_key` (the sshd's
private key, 0600). A disk that cannot be read is treated as blank.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import asyncssh

from fleet.paths import private_dir
from fleet.sim.node import NodeOS

log = logging.getLogger(__name__)


class DiskShelf:
    def __init__(self, folder: Path):
        self.folder = folder

    def _dir(self, mac: str) -> Path:
        return self.folder / mac.replace(":", "")

    def save(self, mac: str, disk) -> None:
        private_dir(self.folder)
        folder = private_dir(self._dir(mac))
        key = folder / "host_key"
        tmp = folder / "host_key.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(disk.os.host_key.export_private_key("openssh"))
        os.replace(tmp, key)
        facts = {"hostname": disk.os.hostname, "deployment": disk.os.deployment,
                 "arch": disk.os.arch, "authorized_keys": list(disk.os.authorized_keys),
                 "address": disk.address,
                 "reported_key": disk.reported_key.export_public_key("openssh").decode()}
        tmp = folder / "os.json.tmp"
        tmp.write_text(json.dumps(facts))
        os.replace(tmp, folder / "os.json")

    def load(self, mac: str):
        from fleet.sim.machine import Disk

        folder = self._dir(mac)
        if not (folder / "os.json").is_file():
            return None
        try:
            facts = json.loads((folder / "os.json").read_text())
            host_key = asyncssh.read_private_key(str(folder / "host_key"))
            reported = asyncssh.import_public_key(facts["reported_key"])
            os_ = NodeOS(hostname=facts["hostname"], deployment=facts["deployment"],
                         host_key=host_key, authorized_keys=list(facts["authorized_keys"]),
                         arch=facts.get("arch", "x86_64"))
            return Disk(os_, facts["address"], reported)
        except (OSError, ValueError, KeyError, TypeError, asyncssh.KeyImportError) as err:
            log.warning("demo: the disk of %s cannot be read (%s); it boots as blank", mac, err)
            return None

    def erase(self, mac: str) -> None:
        shutil.rmtree(self._dir(mac), ignore_errors=True)
