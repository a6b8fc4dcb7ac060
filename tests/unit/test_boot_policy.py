"""The boot policy per state, the iPXE scripts as golden text, and injection attempts
that must never reach a script."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.boot import scripts
from fleet.boot.policy import Action, arch_from_ipxe, clean_fact, decide, facts_from_query
from fleet.boot.scripts import UnsafeValue, ipxe_value
from fleet.core.templates import TemplateError
from fleet.core import lifecycle as lc
from fleet.core.arch import FirmwareArch
from fleet.core.model import MachineState
from fleet.core.config import DeploymentConfig, Profile

MAC = "52:54:00:12:34:56"
BASE = "http://10.77.0.1:8080"
S = MachineState

PROFILE = Profile(version=1, name="t", path=Path("/tmp/t.yaml"), deployments=(
    DeploymentConfig(name="debian12", kind="preseed", kernel="http://x/linux",
                     initrd="http://x/initrd.gz", cmdline="url={{ template_url }}"),
    DeploymentConfig(name="ipxe", kind="script", template=Path("/tmp/s.ipxe")),
    DeploymentConfig(name="bare", kind="script"),
    DeploymentConfig(name="nokernel", kind="kickstart"),
))


def machine_in(state: MachineState, deployment: str = "debian12"):
    t = lc.discover(MAC, 1.0)
    m = t.machine
    if state is S.DISCOVERED:
        return m
    m = lc.apply(m, lc.LeaseOp(1, deployment, "web7"), 2.0).machine
    if state is S.LEASED:
        return m
    if state is S.STALLED:
        return lc.apply(m, lc.Stall("slow"), 3.0).machine
    if state is S.FAILED:
        return lc.apply(m, lc.Fail("broken"), 3.0).machine
    m = lc.apply(m, lc.InstallStarted(), 3.0).machine
    if state is S.PROVISIONING:
        return m
    m = lc.apply(m, lc.CallHome(), 4.0).machine
    if state is S.PROVISIONED:
        return m
    return lc.apply(m, lc.Release(wipe=True), 5.0).machine  # WIPING


@pytest.mark.parametrize("state, action", [
    (S.DISCOVERED, Action.HOLD),
    (S.LEASED, Action.INSTALL),
    (S.PROVISIONING, Action.INSTALL),
    (S.STALLED, Action.INSTALL),
    (S.FAILED, Action.HOLD),
    (S.PROVISIONED, Action.LOCAL),
    (S.WIPING, Action.WIPE),
])
def test_decision_per_state(state, action):
    m = machine_in(state)
    assert m.state is state
    d = decide(m, PROFILE)
    assert d.action is action, d
    assert d.installs == (action is Action.INSTALL)
    if d.installs:
        assert d.deployment.name == "debian12"


def test_unknown_machine_is_held():
    assert decide(None, PROFILE).action is Action.HOLD


def test_stalled_without_lease_is_held():
    m = replace(machine_in(S.DISCOVERED), state=S.STALLED, reason="x")
    assert decide(m, PROFILE).action is Action.HOLD


def test_script_kind_and_missing_pieces():
    assert decide(machine_in(S.LEASED, "ipxe"), PROFILE).action is Action.SCRIPT
    no_template = decide(machine_in(S.LEASED, "bare"), PROFILE)
    assert no_template.action is Action.HOLD and "without a template" in no_template.reason
    no_kernel = decide(machine_in(S.LEASED, "nokernel"), PROFILE)
    assert no_kernel.action is Action.HOLD and "no kernel" in no_kernel.reason
    gone = decide(machine_in(S.LEASED, "vanished"), PROFILE)
    assert gone.action is Action.HOLD and "no longer has" in gone.reason


def test_ended_lease_never_installs():
    m = machine_in(S.LEASED)
    m = replace(m, lease=replace(m.lease, ended_at=9.0))
    assert decide(m, PROFILE).action is Action.HOLD


# -- facts ------------------------------------------------------------------------------

def test_facts_are_cleaned():
    facts = facts_from_query({
        "uuid": "4C4C4544-0051-3510-8051-B4C04F4E3732", "serial": " SN1 ",
        "manufacturer": "a\nb", "product": "x" * 129, "buildarch": "x86_64",
        "platform": "", "ipxe": "1.21.1+", "other": "ignored",
    })
    assert facts == {"uuid": "4c4c4544-0051-3510-8051-b4c04f4e3732",
                     "ipxe_version": "1.21.1+",
                     "info": {"serial": "SN1", "buildarch": "x86_64"}}
    assert facts_from_query({"uuid": "zz"}) == {}
    assert facts_from_query({"uuid": "00000000-0000-0000-0000-000000000000"}) == {}
    assert facts_from_query({"uuid": "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"}) == {}
    assert clean_fact("x" * 128) == "x" * 128
    assert clean_fact("\u00e9") is None and clean_fact(None) is None and clean_fact("\x00") is None


def test_arch_from_ipxe():
    assert arch_from_ipxe("efi", "x86_64") is FirmwareArch.UEFI_X64
    assert arch_from_ipxe("pcbios", "i386") is FirmwareArch.BIOS
    assert arch_from_ipxe("efi", "arm64") is FirmwareArch.UEFI_ARM64
    assert arch_from_ipxe(None, None) is FirmwareArch.UNKNOWN


# -- scripts, golden --------------------------------------------------------------------

FACTS = ("uuid=${uuid}&serial=${serial:uristring}"
         "&manufacturer=${manufacturer:uristring}&product=${product:uristring}"
         "&buildarch=${buildarch:uristring}&platform=${platform:uristring}"
         "&ipxe=${version:uristring}")


def test_hold_script_poll_golden():
    assert scripts.hold_script(BASE, 10) == (
        "#!ipxe\n"
        "echo fleet: waiting to be leased\n"
        ":fleet_wait\n"
        "sleep 10\n"
        f"chain --autofree --replace {BASE}/boot/${{mac}}.ipxe?{FACTS} || goto fleet_wait\n")


def test_hold_script_reboot_golden():
    assert scripts.hold_script(BASE, 30, "reboot") == (
        "#!ipxe\n"
        "echo fleet: waiting to be leased\n"
        f"chain --autofree --replace {BASE}/boot/${{mac}}.ipxe?{FACTS} ||\n"
        "sleep 30\n"
        "reboot || exit\n"
        "exit\n")
    assert scripts.hold_script(BASE, 30, "reboot", reported=True) == (
        "#!ipxe\necho fleet: waiting to be leased\nsleep 30\nreboot || exit\nexit\n")


def test_install_script_golden():
    cmdline = scripts.render_cmdline("auto=true url={{ template_url }}",
                                     {"template_url": f"{BASE}/templates/3.abc"})
    assert scripts.install_script(kernel="http://x/linux", initrd="http://x/initrd.gz",
                                  cmdline=cmdline, deployment="debian12",
                                  hostname="web7") == (
        "#!ipxe\n"
        "echo fleet: installing debian12 as web7\n"
        f"kernel --name kernel http://x/linux initrd=initrd0 auto=true url={BASE}/templates/3.abc\n"
        "initrd --name initrd0 http://x/initrd.gz\n"
        "boot kernel\n")
    # no initrd: no initrd line, no initrd= argument
    assert scripts.install_script(kernel="http://x/k", initrd=None, cmdline="",
                                  deployment="d", hostname="h") == (
        "#!ipxe\necho fleet: installing d as h\nkernel --name kernel http://x/k\nboot kernel\n")


def test_operator_cmdline_may_use_ipxe_settings_but_not_newlines():
    text = scripts.install_script(kernel="http://x/k", initrd=None,
                                  cmdline="ip=${net0/ip} console=ttyS0", deployment="d",
                                  hostname="h")
    assert "kernel --name kernel http://x/k ip=${net0/ip} console=ttyS0\n" in text
    with pytest.raises(UnsafeValue):
        scripts.install_script(kernel="http://x/k", initrd=None, cmdline="a\nshell",
                               deployment="d", hostname="h")
    with pytest.raises(UnsafeValue):
        scripts.install_script(kernel="http://x/k two", initrd=None, cmdline="",
                               deployment="d", hostname="h")


def test_local_and_wipe_and_message_golden():
    assert scripts.local_boot_script() == (
        "#!ipxe\necho fleet: booting from the local disk\n"
        "iseq ${platform} efi && exit ||\n"
        "sanboot --no-describe --drive 0x80 || exit\nexit\n")
    assert scripts.wiper_script(
        kernel_url=f"{BASE}/wiper/ab12/vmlinuz", initrd_url=f"{BASE}/wiper/ab12/initrd.gz",
        report_url=f"{BASE}/api/wiped", token="5.abc", base_url=BASE, retry_seconds=3,
        label="ab12") == (
        "#!ipxe\necho fleet: wiping the disks of ${mac} (wiper ab12)\n"
        f"kernel --name kernel {BASE}/wiper/ab12/vmlinuz initrd=initrd0 quiet console=tty0 "
        f"console=ttyS0,115200 panic=10 fleet.report={BASE}/api/wiped fleet.token=5.abc "
        "|| goto fleet_retry\n"
        f"initrd --name initrd0 {BASE}/wiper/ab12/initrd.gz || goto fleet_retry\n"
        "boot kernel || goto fleet_retry\n:fleet_retry\n"
        "echo fleet: the wiper did not start, asking again in 3s\nsleep 3\n"
        f"chain --autofree --replace {BASE}/boot/${{mac}}.ipxe || goto fleet_retry\n")
    assert scripts.message_script("wipe recorded") == "#!ipxe\necho fleet: wipe recorded\nexit\n"
    with pytest.raises(UnsafeValue):
        scripts.message_script("x\nshell")


# -- injection --------------------------------------------------------------------------

EVIL = ["web7\nshell", "web7\r\nshell", "a;shell", "a#b", "${root}", "a{b}", 'a"b', "a'b",
        "a`b`", "a\\nb", "<script>alert(1)</script>", "a b", "", "a&b", "a|b", "caf\u00e9",
        "a\x00b", "a\x1bb"]


@pytest.mark.parametrize("value", EVIL)
def test_unsafe_values_are_refused_everywhere(value):
    with pytest.raises(UnsafeValue):
        ipxe_value("x", value)
    with pytest.raises(UnsafeValue):
        scripts.install_script(kernel="http://x/k", initrd=None, cmdline="",
                               deployment="d", hostname=value)
    with pytest.raises(UnsafeValue):
        scripts.install_script(kernel="http://x/k", initrd=None, cmdline="",
                               deployment=value, hostname="h")
    with pytest.raises(UnsafeValue):
        scripts.hold_script(value, 10)
    for field in ("kernel_url", "initrd_url", "report_url", "token", "base_url", "label"):
        args = dict(kernel_url="http://x/k", initrd_url="http://x/i", report_url="http://x/r",
                    token="1.a", base_url="http://x", retry_seconds=3, label="l")
        args[field] = value
        with pytest.raises(UnsafeValue):
            scripts.wiper_script(**args)
    with pytest.raises(UnsafeValue):
        scripts.wiper_missing_script(value, 3)
    with pytest.raises(TemplateError):
        scripts.render_cmdline("url={{ template_url }}", {"template_url": value})


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_value_that_passes_cannot_add_a_line_or_expand(value):
    try:
        ipxe_value("x", value)
    except UnsafeValue:
        return
    text = scripts.install_script(kernel="http://x/k", initrd=None, cmdline="",
                                  deployment="d", hostname=value)
    assert text.count("\n") == 4
    assert "${" not in text and "#" not in text.replace("#!ipxe", "")
    assert value.isascii() and value.isprintable() and " " not in value


def test_hold_script_rejects_nonsense_poll():
    with pytest.raises(UnsafeValue):
        scripts.hold_script(BASE, 0)


# -- token purposes (fleet.tokens) -------------------------------------------------------

def test_token_purposes_are_distinct_and_callhome_is_unchanged(tmp_path):
    import base64
    import hashlib
    import hmac

    from fleet.tokens import TokenSigner

    signer = TokenSigner(tmp_path / "secret")
    callhome = signer.issue(7, MAC)
    assert callhome == signer.issue(7, MAC, "callhome")
    # the pre-purpose formula still gives the same token (issued tokens stay valid)
    digest = hmac.new((tmp_path / "secret").read_bytes(), f"7:{MAC}".encode(),
                      hashlib.sha256).digest()
    assert callhome == "7." + base64.b32encode(digest[:20]).decode().lower().rstrip("=")
    template, wipe = signer.issue(7, MAC, "template"), signer.issue(7, MAC, "wipe")
    assert len({callhome, template, wipe}) == 3
    assert signer.verify(template, 7, MAC, "template")
    assert not signer.verify(template, 7, MAC) and not signer.verify(wipe, 7, MAC, "template")
    assert not signer.verify("7.caf\u00e9", 7, MAC)
    with pytest.raises(ValueError):
        signer.issue(7, MAC, "other")
