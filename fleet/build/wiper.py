"""The wiper: a Linux kernel and a small initrd that clear a machine's disks and
report to fleet (kind `wiper`; `fleet --headless build wiper [--wiper-root DIR]`).

A machine released with `--wipe` boots it (fleet.boot.wipe writes the iPXE
script). Its /init (busybox sh, `INIT` below):
1. loads the disk and NIC modules the kernel has as modules, in dependency order;
2. zeroes the first and the last MiB of every whole disk (`/sys/block`: sd*,
   vd*, xvd*, hd*, nvme*n*): the MBR, the GPT header and its backup at the end,
   and most RAID/LVM/ZFS labels;
3. brings the NICs up with busybox `udhcpc` and POSTs a JSON report with the
   one-time wipe token from the kernel command line (`fleet.report=<url>
   fleet.token=<token>`) to fleet's `/api/wiped`;
4. `reboot -f` (the next PXE boot gets whatever fleet says then: the hold loop).

Sources, all from Debian packages (`wiper_root`, default `/`, is where they are
installed or where they were unpacked with `dpkg-deb -x`, no postinst needed):
- the kernel: the newest `boot/vmlinuz-<version>` that has `lib/modules/<version>`
  (package linux-image-amd64 for bare metal, linux-image-cloud-amd64 for VMs);
- a statically linked busybox (`bin/busybox`, package busybox-static; the
  dynamically linked one of package busybox would need a libc in the initrd).
Module dependencies are read from each module's `.modinfo` ELF section
(`depends=`), so an unpacked package without `modules.dep` (made by depmod in
postinst) works too. Modules the kernel has built in (`modules.builtin`) are
skipped; wanted modules the kernel lacks are listed in the artifact's meta.

The initrd is a gzip'd newc cpio written by fleet.build.cpio: reproducible
bytes for the same inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import gzip
import lzma
import os
import re
import shutil
import struct
from pathlib import Path

from fleet.build import tools
from fleet.build.cpio import Entry, gzipped
from fleet.build.request import Built
from fleet.errors import BadInput, EnvironmentProblem

if TYPE_CHECKING:
    from fleet.engine import Engine

KIND = "wiper"
#: bump when the initrd's layout or /init changes
WIPER_VERSION = 1

#: storage then NIC drivers; whichever the kernel has as modules go in
DEFAULT_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ahci", "ata_piix", "nvme",
    "megaraid_sas", "mpt3sas",
    "virtio_net", "e1000", "e1000e", "igb", "ixgbe", "i40e", "tg3", "bnx2", "r8169",
    "vmxnet3",
)

KERNEL_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"

INIT = r"""#!/bin/sh
# fleet wiper: zero the first and last MiB of every disk, report to fleet, reboot.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp
say() { echo "fleet-wiper: $*"; }
give_up() { say "$*; rebooting in 10s"; sleep 10; reboot -f; }

for m in $(cat /etc/wiper/modules); do
  insmod "/lib/modules/$m" 2>/dev/null || say "insmod $m failed"
done

REPORT=""
TOKEN=""
for w in $(cat /proc/cmdline); do
  case "$w" in
    fleet.report=*) REPORT="${w#fleet.report=}" ;;
    fleet.token=*) TOKEN="${w#fleet.token=}" ;;
  esac
done
[ -n "$REPORT" ] && [ -n "$TOKEN" ] || give_up "no fleet.report/fleet.token on the command line"

disks() {
  for d in /sys/block/*; do
    n="${d##*/}"
    case "$n" in sd*|vd*|xvd*|hd*|nvme*n*) echo "$n" ;; esac
  done
}

# drivers probe in the background: wait until the disk list is steady (max ~6 s)
last=""
steady=0
i=0
while [ $i -lt 12 ]; do
  now="$(disks | tr '\n' ' ')"
  if [ -n "$now" ] && [ "$now" = "$last" ]; then
    steady=$((steady + 1))
    [ $steady -ge 2 ] && break
  else
    steady=0
  fi
  last="$now"
  i=$((i + 1))
  sleep 0.5
done

DISKS=""
FAILED=""
zero() {  # zero(device, first sector, count)
  dd if=/dev/zero of="$1" bs=512 seek="$2" count="$3" conv=fsync 2>/dev/null
}
for n in $(disks); do
  dev="/dev/$n"
  sectors="$(cat /sys/block/$n/size)"
  if [ "$(cat /sys/block/$n/ro)" = 1 ]; then
    FAILED="$FAILED,{\"name\":\"$n\",\"error\":\"read-only\"}"
    continue
  fi
  if [ ! -b "$dev" ]; then
    FAILED="$FAILED,{\"name\":\"$n\",\"error\":\"no device node\"}"
    continue
  fi
  ok=1
  if [ "$sectors" -le 4096 ]; then
    zero "$dev" 0 "$sectors" || ok=0
  else
    zero "$dev" 0 2048 || ok=0
    zero "$dev" $((sectors - 2048)) 2048 || ok=0
  fi
  blockdev --flushbufs "$dev" 2>/dev/null
  if [ $ok = 1 ]; then
    say "$n: first and last MiB zeroed ($((sectors / 2048)) MiB disk)"
    DISKS="$DISKS,{\"name\":\"$n\",\"bytes\":$((sectors * 512))}"
  else
    say "$n: write failed"
    FAILED="$FAILED,{\"name\":\"$n\",\"error\":\"write failed\"}"
  fi
done
sync
UP="$(cut -d' ' -f1 /proc/uptime)"
BODY="{\"token\":\"$TOKEN\",\"disks\":[${DISKS#,}],\"failed\":[${FAILED#,}],\"uptime\":\"$UP\"}"

ip link set lo up
nics() {
  for n in /sys/class/net/*; do
    i="${n##*/}"
    [ "$i" = lo ] || echo "$i"
  done
}
for i in $(nics); do ip link set "$i" up; done
attempt=0
while [ $attempt -lt 5 ]; do
  for i in $(nics); do
    udhcpc -i "$i" -n -q -t 4 -T 2 -s /etc/wiper/udhcpc.script >/dev/null 2>&1 || continue
    if wget -q -O /tmp/answer --header "Content-Type: application/json" \
        --post-data "$BODY" "$REPORT"; then
      say "reported to fleet; rebooting"
      sync
      reboot -f
    fi
    say "the report over $i failed"
  done
  attempt=$((attempt + 1))
  sleep 3
done
give_up "could not report to fleet"
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
  deconfig) ifconfig "$interface" 0.0.0.0 ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    for r in $router; do route add default gw "$r" dev "$interface" 2>/dev/null; break; done
    ;;
esac
exit 0
"""


# -- sources ------------------------------------------------------------------------

def _version_key(version: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version)]


def find_kernel(root: Path) -> tuple[str, Path, Path]:
    """(version, vmlinuz, modules folder) of the newest kernel under `root`."""
    found = []
    for vmlinuz in (root / "boot").glob("vmlinuz-*"):
        version = vmlinuz.name[len("vmlinuz-"):]
        modules = root / "lib" / "modules" / version
        if modules.is_dir() and vmlinuz.is_file():
            found.append((version, vmlinuz, modules))
    if not found:
        raise EnvironmentProblem(
            f"no Linux kernel with modules under {root / 'boot'}: apt-get install "
            f"{KERNEL_PACKAGE} (or unpack one with dpkg-deb -x into a folder and give "
            f"--wiper-root FOLDER)")
    return max(found, key=lambda f: _version_key(f[0]))


def find_busybox(root: Path) -> Path:
    for rel in ("bin/busybox", "usr/bin/busybox"):
        path = root / rel
        if path.is_file():
            if elf_interpreter(path.read_bytes()[:1 << 16]) is not None:
                raise EnvironmentProblem(
                    f"{path} is dynamically linked: apt-get install {BUSYBOX_PACKAGE} "
                    f"(it replaces package busybox)")
            return path
    raise tools.missing(f"a static busybox under {root}", BUSYBOX_PACKAGE)


# -- ELF: the two things we read ----------------------------------------------------

def _elf64(data: bytes) -> None:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")


def elf_interpreter(data: bytes) -> str | None:
    """PT_INTERP of an ELF executable (None: statically linked)."""
    _elf64(data)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", data, off)
        if p_type == 3:  # PT_INTERP
            p_offset, = struct.unpack_from("<Q", data, off + 8)
            p_filesz, = struct.unpack_from("<Q", data, off + 32)
            return data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode(errors="replace")
    return None


def modinfo(data: bytes) -> dict[str, str]:
    """The key=value strings of a kernel module's `.modinfo` section (first value wins)."""
    _elf64(data)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        off = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, off)
        offset, size = struct.unpack_from("<QQ", data, off + 0x18)
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = data[str_off:str_off + str_size]
    for i in range(shnum):
        name, offset, size = section(i)
        if names[name:names.index(b"\0", name)] == b".modinfo":
            out: dict[str, str] = {}
            for item in data[offset:offset + size].split(b"\0"):
                key, eq, value = item.decode(errors="replace").partition("=")
                if eq:
                    out.setdefault(key, value)
            return out
    return {}


def _module_name(filename: str) -> str:
    return filename.split(".ko", 1)[0].replace("-", "_")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise EnvironmentProblem(f"{path}: compressed modules other than .xz/.gz are not "
                             f"supported")


class ModuleSet:
    """The kernel's modules by name, and which are built in."""

    def __init__(self, modules_dir: Path):
        self.dir = modules_dir
        self.files: dict[str, Path] = {}
        for dirpath, _dirs, filenames in os.walk(modules_dir / "kernel"):
            for fname in filenames:
                if re.search(r"\.ko(\.xz|\.gz|\.zst)?$", fname):
                    self.files.setdefault(_module_name(fname), Path(dirpath) / fname)
        self.builtin: set[str] = set()
        builtin = modules_dir / "modules.builtin"
        if builtin.is_file():
            for line in builtin.read_text().splitlines():
                if line.strip():
                    self.builtin.add(_module_name(line.rsplit("/", 1)[-1]))

    def closure(self, wanted: list[str]) -> tuple[list[str], list[str], list[str]]:
        """(modules to load in dependency order, built in, not available)."""
        order: list[str] = []
        builtin: list[str] = []
        absent: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, top: bool) -> None:
            if name in order or name in visiting:
                return
            if name in self.builtin:
                if top:
                    builtin.append(name)
                return
            path = self.files.get(name)
            if path is None:
                if top:
                    absent.append(name)
                else:
                    raise EnvironmentProblem(f"module {name} (a dependency) is missing from "
                                             f"{self.dir}")
                return
            visiting.add(name)
            deps = modinfo(_read_module(path)).get("depends", "")
            for dep in filter(None, deps.split(",")):
                visit(dep.replace("-", "_"), False)
            visiting.discard(name)
            order.append(name)

        for name in wanted:
            visit(name.replace("-", "_"), True)
        return order, builtin, absent


# -- plan and build -----------------------------------------------------------------

def wiper_root(req: dict) -> Path:
    return Path(req.get("wiper_root") or "/")


def _modules(req: dict) -> list[str]:
    return list(req.get("wiper_modules") or DEFAULT_MODULES)


def _sources(req: dict):
    root = wiper_root(req)
    version, vmlinuz, modules_dir = find_kernel(root)
    busybox = find_busybox(root)
    mods = ModuleSet(modules_dir)
    order, builtin, absent = mods.closure(_modules(req))
    return version, vmlinuz, busybox, mods, order, builtin, absent


def plan(engine: "Engine", req: dict) -> tuple[str, dict]:
    version, vmlinuz, busybox, mods, order, _, _ = _sources(req)
    return f"wiper-{version}", {
        "wiper": WIPER_VERSION, "init": INIT, "udhcpc": UDHCPC_SCRIPT,
        "kernel": version, "vmlinuz": tools.fingerprint(vmlinuz),
        "busybox": tools.fingerprint(busybox),
        "modules": [[m, tools.fingerprint(mods.files[m])] for m in order],
    }


def initrd_entries(busybox: bytes, modules: list[tuple[str, bytes]]) -> list[Entry]:
    """The initrd's members: busybox, /init, the module list and modules."""
    entries = [Entry.directory(d) for d in
               ("bin", "dev", "etc", "etc/wiper", "lib", "lib/modules", "proc", "sys", "tmp")]
    entries += [
        Entry.char_device("dev/console", 5, 1),
        Entry.char_device("dev/null", 1, 3, 0o666),
        Entry.file("bin/busybox", busybox, 0o755),
    ]
    # the applets /init uses; `busybox --install` would need a writable /bin at boot
    for applet in ("sh", "mount", "mkdir", "cat", "echo", "sleep", "insmod", "dd", "tr",
                   "cut", "sync", "blockdev", "ip", "ifconfig", "route", "udhcpc", "wget",
                   "reboot"):
        entries.append(Entry.symlink(f"bin/{applet}", "busybox"))
    entries += [
        Entry.file("init", INIT.encode(), 0o755),
        Entry.file("etc/wiper/udhcpc.script", UDHCPC_SCRIPT.encode(), 0o755),
        Entry.file("etc/wiper/modules",
                   "".join(f"{name}.ko\n" for name, _ in modules).encode()),
    ]
    entries += [Entry.file(f"lib/modules/{name}.ko", data) for name, data in modules]
    return entries


def _copy_kernel(vmlinuz: Path, dest: Path) -> None:
    with open(vmlinuz, "rb") as f:
        head = f.read(0x206)
    if head[0x202:0x206] != b"HdrS":
        raise EnvironmentProblem(f"{vmlinuz} is not a Linux bzImage (no HdrS)")
    shutil.copyfile(vmlinuz, dest)


def _write_initrd(busybox: Path, mods: ModuleSet, order: list[str], dest: Path) -> bytes:
    modules = [(name, _read_module(mods.files[name])) for name in order]
    image = gzipped(initrd_entries(busybox.read_bytes(), modules))
    dest.write_bytes(image)
    return image


async def build(ctx, engine: "Engine", req: dict, out: Path, work: Path) -> Built:
    ctx.progress(0.05, "find the kernel, busybox and modules")
    # file reads and gzip take a second or two: off the event loop, which may be
    # serving DHCP in the same process
    version, vmlinuz, busybox, mods, order, builtin, absent = await asyncio.to_thread(
        _sources, req)
    ctx.log(f"kernel {version}: {vmlinuz}")
    ctx.log(f"busybox: {busybox}")
    ctx.log(f"modules: {', '.join(order) or 'none'}; built in: {', '.join(builtin) or 'none'}"
            f"; not in this kernel: {', '.join(absent) or 'none'}")
    ctx.check_cancelled()
    ctx.progress(0.2, "copy the kernel")
    await asyncio.to_thread(_copy_kernel, vmlinuz, out / "vmlinuz")
    ctx.progress(0.4, "write the initrd")
    image = await asyncio.to_thread(_write_initrd, busybox, mods, order, out / "initrd.gz")
    (out / "init").write_text(INIT)
    ctx.log(f"initrd.gz: {len(image)} bytes, {len(order)} modules")
    root = wiper_root(req)
    packages = {}
    if root == Path("/"):
        packages = {p: tools.package_version(p) for p in (BUSYBOX_PACKAGE,)}
    return Built(main=None, version=version, meta={
        "kernel": version, "root": str(root), "vmlinuz": str(vmlinuz), "busybox": str(busybox),
        "modules": order, "builtin": builtin, "absent": absent, "packages": packages,
        "initrd_size": len(image)})


def check_modules(value) -> list[str]:
    """A request's module list: names of [A-Za-z0-9_-]."""
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    names = [str(v) for v in value]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n)]
    if bad or not names:
        raise BadInput(f"wiper modules: names of A-Z a-z 0-9 _ - (got {bad or 'none'})")
    return names
