"""iPXE scripts: the hold loop, the install script, local boot and the wiper.

Everything here returns text; nothing does I/O. Values that come from outside
the profile's own iPXE text (host names, tokens, URLs fleet builds) go through
`ipxe_value`, which refuses anything that could end a line, start a comment,
separate commands or be expanded by iPXE (`${...}`), so a value can never add
a line to a script. The operator's own profile text (kernel/initrd URLs and the
kernel command line) may use iPXE syntax on purpose, e.g. `ip=${net0/ip}`, so it
is only refused when it holds control characters (a newline would start a new
command).

Notes on the Debian 12 iPXE build (1.0.0+git-20190125), which the scripts are
written for (the hold loop, install, local boot and wipe scripts were run by
the `ipxe-qemu` NIC ROM in QEMU: tests/integration/test_boot_http.py, last test):
- `sleep`, `goto`, `iseq`, `chain --autofree --replace`,
  `sanboot --no-describe --drive` and the `:uristring` setting type exist.
- `:uristring` encodes a space as %20 but leaves '+' alone, so the HTTP
  service reads '+' in the hold loop's query as a plus, not a space.
- The BIOS build has no `reboot` command, so the `hold: reboot` variant writes
  `reboot || exit`: where `reboot` is missing, `exit` hands the machine back to
  its firmware, which moves on to the next boot device (and PXE boots again
  once the boot order comes round).
- Local boot: on BIOS `sanboot --no-describe --drive 0x80` boots the first hard
  disk's MBR; on UEFI there is no drive 0x80, so the script `exit`s at once and
  the firmware boot manager tries the next entry (the installed disk). If
  sanboot fails, `exit` does the same on BIOS.
"""

from __future__ import annotations

import re

from fleet.boot.templates import render
from fleet.core.templates import TemplateError

FACT_VARIABLES = (
    ("uuid", "uuid"), ("serial", "serial:uristring"),
    ("manufacturer", "manufacturer:uristring"), ("product", "product:uristring"),
    ("buildarch", "buildarch:uristring"), ("platform", "platform:uristring"),
    ("ipxe", "version:uristring"),
)
"""Query key -> iPXE setting the hold loop reports on every poll.

String settings are sent as `${name:uristring}` so a serial number with spaces,
'&' or '+' stays one URL argument. `uuid` is not a string setting: iPXE formats
its 16 raw bytes with `:uristring` and the first NUL ends the whole command
line (seen with Debian's iPXE in QEMU, where the UUID is all zeros), so it goes
as plain `${uuid}`, whose text form has only hex digits and '-'."""

_UNSAFE = set("\n\r;#${}\"'`\\<>&|") | {chr(c) for c in range(0, 32)} | {"\x7f"}
_CONTROL = {chr(c) for c in range(0, 32)} | {"\x7f"}


class UnsafeValue(ValueError):
    """A value that could change the meaning of an iPXE script."""


def ipxe_value(name: str, value: str) -> str:
    """`value` unchanged if it is safe to place in an iPXE command line; else UnsafeValue.

    Refused: newline, CR and every control character, `;` `#` `$` `{` `}` quotes,
    backslash, `<` `>` `&` `|`, whitespace, non-ASCII, and empty values.
    """
    if not isinstance(value, str) or not value:
        raise UnsafeValue(f"{name} is empty")
    if not value.isascii() or any(c in _UNSAFE or c.isspace() for c in value):
        raise UnsafeValue(f"{name} has characters that are not safe in an iPXE script")
    return value


def profile_text(name: str, value: str) -> str:
    """Operator-written iPXE text: anything but control characters."""
    if any(c in _CONTROL for c in value):
        raise UnsafeValue(f"{name} has control characters (a newline would start a new "
                          f"iPXE command)")
    return value


def profile_word(name: str, value: str) -> str:
    """Operator-written iPXE text that must stay one argument (a URL)."""
    profile_text(name, value)
    if not value or any(c.isspace() for c in value):
        raise UnsafeValue(f"{name} must be one word (a URL without spaces)")
    return value


def check_script(text: str, source: str = "script") -> None:
    if not text.startswith("#!ipxe"):
        raise TemplateError(f"{source}: an iPXE script must start with '#!ipxe'")


# -- the scripts ------------------------------------------------------------------------

def hold_script(base_url: str, poll_seconds: int, mode: str = "poll", *,
                reported: bool = False) -> str:
    """Keep an unleased machine waiting, reporting its facts to fleet.

    poll (default): sleep, then fetch this machine's script again with its facts
    in the query; once it is leased, that fetch returns the install script. A
    failed fetch (fleet restarting) loops. `--replace` makes each fetched script
    replace the running one, so hours of polling do not nest scripts.

    reboot: a first answer (`reported=False`) fetches the script once more with
    the facts, so they are recorded; the answer to that (`reported=True`) sleeps
    and reboots, or exits to the firmware where iPXE has no `reboot` command.

    See FACT_VARIABLES for how each fact is expanded.
    """
    base_url = ipxe_value("base_url", base_url)
    seconds = int(poll_seconds)
    if seconds < 1:
        raise UnsafeValue("poll_seconds must be at least 1")
    query = "&".join(f"{key}=${{{var}}}" for key, var in FACT_VARIABLES)
    url = f"{base_url}/boot/${{mac}}.ipxe?{query}"
    lines = ["#!ipxe", "echo fleet: waiting to be leased"]
    if mode == "reboot":
        if not reported:
            lines.append(f"chain --autofree --replace {url} ||")
        lines += [f"sleep {seconds}", "reboot || exit", "exit"]
    else:
        lines += [
            ":fleet_wait",
            f"sleep {seconds}",
            f"chain --autofree --replace {url} || goto fleet_wait",
        ]
    return "\n".join(lines) + "\n"


def install_script(*, kernel: str, initrd: str | None, cmdline: str, deployment: str,
                   hostname: str) -> str:
    """Fetch the deployment's kernel and initrd and boot them.

    The initrd is named `initrd0` and the kernel gets `initrd=initrd0`: the EFI
    stub of a Linux kernel loads its initrd by that name (under BIOS the
    argument is ignored), as pixiecore does.
    """
    deployment = ipxe_value("deployment", deployment)
    hostname = ipxe_value("hostname", hostname)
    kernel = profile_word("kernel", kernel)
    cmdline = profile_text("cmdline", cmdline).strip()
    lines = ["#!ipxe", f"echo fleet: installing {deployment} as {hostname}"]
    args = []
    if initrd:
        initrd = profile_word("initrd", initrd)
        args.append("initrd=initrd0")
    if cmdline:
        args.append(cmdline)
    lines.append(" ".join(["kernel --name kernel", kernel, *args]))
    if initrd:
        lines.append(f"initrd --name initrd0 {initrd}")
    lines.append("boot kernel")
    return "\n".join(lines) + "\n"


def render_cmdline(cmdline: str, values: dict[str, str], source: str = "cmdline") -> str:
    """The deployment's kernel command line with `{{ template_url }}` and friends."""
    return render(profile_text(source, cmdline), values, check=ipxe_value, source=source)


def local_boot_script() -> str:
    return (
        "#!ipxe\n"
        "echo fleet: booting from the local disk\n"
        "iseq ${platform} efi && exit ||\n"
        "sanboot --no-describe --drive 0x80 || exit\n"
        "exit\n"
    )


WIPER_CMDLINE = "quiet console=tty0 console=ttyS0,115200 panic=10"
"""The wiper kernel's own arguments: `quiet` because a serial console under
emulation is slow, both consoles so its progress shows on a screen and a serial
line (the last one is /dev/console), `panic=10` so a crash reboots."""


def wiper_script(*, kernel_url: str, initrd_url: str, report_url: str, token: str,
                 base_url: str, retry_seconds: int, label: str) -> str:
    """Boot the wiper (fleet.build.wiper) with its report URL and one-time token.

    Every value is checked with `ipxe_value`, so none can add a word to the kernel
    command line or a line to the script. A failed download waits and asks fleet
    again (the machine's own /boot script).
    """
    values = {k: ipxe_value(k, v) for k, v in (
        ("kernel_url", kernel_url), ("initrd_url", initrd_url), ("report_url", report_url),
        ("token", token), ("base_url", base_url), ("label", label))}
    seconds = int(retry_seconds)
    if seconds < 1:
        raise UnsafeValue("retry_seconds must be at least 1")
    return (
        "#!ipxe\n"
        f"echo fleet: wiping the disks of ${{mac}} (wiper {values['label']})\n"
        f"kernel --name kernel {values['kernel_url']} initrd=initrd0 {WIPER_CMDLINE} "
        f"fleet.report={values['report_url']} fleet.token={values['token']} "
        "|| goto fleet_retry\n"
        f"initrd --name initrd0 {values['initrd_url']} || goto fleet_retry\n"
        "boot kernel || goto fleet_retry\n"
        ":fleet_retry\n"
        f"echo fleet: the wiper did not start, asking again in {seconds}s\n"
        f"sleep {seconds}\n"
        f"chain --autofree --replace {values['base_url']}/boot/${{mac}}.ipxe "
        "|| goto fleet_retry\n"
    )


def wiper_missing_script(base_url: str, retry_seconds: int) -> str:
    """Wait (polling fleet) while there is no wiper image to boot: a machine to be
    wiped must never be reported clear without being cleared."""
    base_url = ipxe_value("base_url", base_url)
    seconds = int(retry_seconds)
    if seconds < 1:
        raise UnsafeValue("retry_seconds must be at least 1")
    return (
        "#!ipxe\n"
        "echo fleet: waiting to be wiped: no wiper image yet (fleet --headless build wiper)\n"
        ":fleet_wait\n"
        f"sleep {seconds}\n"
        f"chain --autofree --replace {base_url}/boot/${{mac}}.ipxe || goto fleet_wait\n"
    )


def message_script(message: str) -> str:
    """A script that prints a fixed message and exits (answers to chained reports)."""
    if not re.fullmatch(r"[A-Za-z0-9 ,.:()/_-]{1,200}", message):
        raise UnsafeValue("message has characters that are not safe in an iPXE script")
    return f"#!ipxe\necho fleet: {message}\nexit\n"
