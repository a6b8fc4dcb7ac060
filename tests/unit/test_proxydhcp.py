"""proxyDHCP decisions (who gets which file or URL, per mode), the offers and
ACKs on the wire, the reply target, and the boot-file lookup."""

from __future__ import annotations

import os
import uuid
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from fleet.boot.dhcp import DhcpPacket, MessageType, Opt
from fleet.boot.dhcp_options import (PxeSub, decode_pxe_boot_menu, decode_pxe_boot_servers,
                                     decode_pxe_menu_prompt)
from fleet.boot.files import BootFiles
from fleet.boot.proxydhcp import (MENU_ITEM_TYPE, Answer, ClientKind, Ignore, build_ack,
                                  build_offer, classify, decide, reply_target, sighting_facts)
from fleet.boot.tftp import Refused
from fleet.core.arch import FirmwareArch
from fleet.core.config import DistributorConfig, Ports, Profile, SiteConfig

from support.pxe_client import ClientSpec, discover_packet, request_packet

MAC = "52:54:00:12:34:56"
ADDR = "10.77.0.1"


def make_profile(tmp: Path, *, mode="port4011", ipxe_dir: Path | None = None,
                 tftp_root: Path | None = None, vendor_classes=("PXEClient", "HTTPClient"),
                 http=8080) -> Profile:
    cfg = DistributorConfig(interface=None, address=ADDR,
                            ports=Ports(dhcp=67, pxe=4011, tftp=69, http=http),
                            proxy_mode=mode, vendor_classes=tuple(vendor_classes),
                            ipxe_dir=ipxe_dir, tftp_root=tftp_root)
    return Profile(version=1, name="t", path=tmp / "t.yaml",
                   sites=(SiteConfig(name="rack1", distributor=cfg),))


@pytest.fixture
def ipxe_dir(tmp_path):
    d = tmp_path / "ipxe"
    d.mkdir()
    for name in ("undionly.kpxe", "ipxe.efi", "snponly.efi"):
        (d / name).write_bytes(name.encode() * 10)
    return d


def setup(tmp_path, ipxe_dir, **kw):
    profile = make_profile(tmp_path, ipxe_dir=ipxe_dir, **kw)
    cfg = profile.site("rack1").distributor
    return cfg, BootFiles(profile, "rack1", system_dirs=())


def pkt(kind: str, **kw) -> DhcpPacket:
    # Through the wire format, as the server sees it.
    return DhcpPacket.parse(discover_packet(ClientSpec(MAC, kind, **kw)).encode())


# ------------------------------------------------------------------ classify

def test_plain_dhcp_client_is_not_ours():
    r = classify(pkt("plain"), ("PXEClient", "HTTPClient"))
    assert isinstance(r, Ignore) and "option 60" in r.reason


def test_pxe_vendor_class_without_arch_is_not_ours():
    p = pkt("bios")
    del p.options[Opt.CLIENT_ARCH]
    r = classify(p, ("PXEClient",))
    assert isinstance(r, Ignore) and "option 93" in r.reason


def test_vendor_classes_knob():
    p = pkt("bios", vendor_class="AcmeBoot:Arch:00000")
    assert isinstance(classify(p, ("PXEClient", "HTTPClient")), Ignore)
    assert classify(p, ("PXEClient", "AcmeBoot")) == ClientKind.FIRMWARE


@pytest.mark.parametrize("kind, expected", [
    ("bios", ClientKind.FIRMWARE), ("uefi", ClientKind.FIRMWARE),
    ("ipxe-bios", ClientKind.IPXE), ("ipxe-efi", ClientKind.IPXE),
    ("http", ClientKind.HTTP_BOOT)])
def test_client_kinds(kind, expected):
    assert classify(pkt(kind), ("PXEClient", "HTTPClient")) == expected


def test_ipxe_by_user_class_alone_and_by_option_175_alone():
    a = pkt("ipxe-bios")
    del a.options[Opt.IPXE_ENCAP]
    b = pkt("ipxe-bios")
    del b.options[Opt.USER_CLASS]
    assert a.is_ipxe and b.is_ipxe
    assert classify(a, ("PXEClient",)) == classify(b, ("PXEClient",)) == ClientKind.IPXE


# ------------------------------------------------------------------ decide

@pytest.mark.parametrize("mode", ["port4011", "direct"])
@pytest.mark.parametrize("kind, arch, stage, file", [
    ("bios", FirmwareArch.BIOS, "firmware", "undionly.kpxe"),
    ("uefi", FirmwareArch.UEFI_X64, "firmware", "ipxe.efi"),
    ("uefi-bc", FirmwareArch.UEFI_X64, "firmware", "ipxe.efi"),
    ("ipxe-bios", FirmwareArch.BIOS, "ipxe", f"http://{ADDR}:8080/boot/{MAC}.ipxe"),
    ("ipxe-efi", FirmwareArch.UEFI_X64, "ipxe", f"http://{ADDR}:8080/boot/{MAC}.ipxe"),
    ("http", FirmwareArch.UEFI_X64_HTTP, "firmware", f"http://{ADDR}:8080/ipxe/ipxe.efi"),
])
def test_decide_per_kind(tmp_path, ipxe_dir, mode, kind, arch, stage, file):
    cfg, files = setup(tmp_path, ipxe_dir, mode=mode)
    a = decide(pkt(kind), cfg, files)
    assert isinstance(a, Answer)
    assert (a.arch, a.stage, a.boot_file, a.mac) == (arch, stage, file, MAC)
    assert a.vendor_class == ("HTTPClient" if kind == "http" else "PXEClient")
    assert a.menu == (mode == "port4011" and kind == "bios")


def test_http_port_override(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir)
    a = decide(pkt("ipxe-efi"), cfg, files, http_port=18080)
    assert a.boot_file == f"http://{ADDR}:18080/boot/{MAC}.ipxe"


def test_arm64_only_when_its_binary_exists(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir)
    assert isinstance(decide(pkt("arm64"), cfg, files), Ignore)
    (ipxe_dir / "ipxe-arm64.efi").write_bytes(b"arm")
    a = decide(pkt("arm64"), cfg, files)
    assert a.boot_file == "ipxe-arm64.efi" and a.arch is FirmwareArch.UEFI_ARM64


def test_x86_uefi_gets_nothing(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir)
    r = decide(pkt("uefi-x86"), cfg, files)
    assert isinstance(r, Ignore) and "x86 UEFI" in r.reason


def test_missing_bios_binary_means_no_answer(tmp_path, ipxe_dir):
    (ipxe_dir / "undionly.kpxe").unlink()
    cfg, files = setup(tmp_path, ipxe_dir)
    assert isinstance(decide(pkt("bios"), cfg, files), Ignore)


def test_snponly_when_configured_or_when_ipxe_efi_missing(tmp_path, ipxe_dir):
    profile = make_profile(tmp_path, ipxe_dir=ipxe_dir)
    files = BootFiles(profile, "rack1", system_dirs=(), uefi_binary="snponly.efi")
    assert files.ipxe_binary_for(FirmwareArch.UEFI_X64) == "snponly.efi"
    (ipxe_dir / "ipxe.efi").unlink()
    plain = BootFiles(profile, "rack1", system_dirs=())
    assert plain.ipxe_binary_for(FirmwareArch.UEFI_X64) == "snponly.efi"


def test_malformed_option_is_malformed_not_a_crash(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir)
    p = pkt("bios")
    p.options[Opt.CLIENT_ARCH] = b"\x00"  # odd length
    r = decide(p, cfg, files)
    assert isinstance(r, Ignore) and r.malformed


def test_a_reply_is_not_a_request(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir)
    p = pkt("bios")
    p.op = 2
    assert isinstance(decide(p, cfg, files), Ignore)


# ------------------------------------------------------------------ the wire

def _subs(p: DhcpPacket) -> dict:
    return p.pxe_options or {}


@pytest.mark.parametrize("kind, file", [("bios", "undionly.kpxe"), ("uefi", "ipxe.efi")])
def test_direct_offer_has_43_6_8_server_id_siaddr_and_file(tmp_path, ipxe_dir, kind, file):
    cfg, files = setup(tmp_path, ipxe_dir, mode="direct")
    request = pkt(kind)
    offer = DhcpPacket.parse(build_offer(request, decide(request, cfg, files), cfg).encode())
    assert offer.message_type is MessageType.OFFER
    assert offer.yiaddr == IPv4Address(0) and offer.xid == request.xid
    assert _subs(offer) == {PxeSub.DISCOVERY_CONTROL: b"\x08"}
    assert offer.server_id == IPv4Address(ADDR) and offer.siaddr == IPv4Address(ADDR)
    assert offer.bootfile_name.rstrip("\0") == file and offer.file == file.encode()
    assert offer.vendor_class == "PXEClient"


def test_port4011_bios_offer_is_a_menu_without_file(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir, mode="port4011")
    request = pkt("bios")
    offer = DhcpPacket.parse(build_offer(request, decide(request, cfg, files), cfg).encode())
    subs = _subs(offer)
    assert [i.type for i in decode_pxe_boot_menu(subs[PxeSub.BOOT_MENU])] == [MENU_ITEM_TYPE]
    assert decode_pxe_boot_servers(subs[PxeSub.BOOT_SERVERS]) == [
        (MENU_ITEM_TYPE, [IPv4Address(ADDR)])]
    assert decode_pxe_menu_prompt(subs[PxeSub.MENU_PROMPT])[0] == 0  # no waiting
    assert offer.bootfile_name is None and offer.file == b""


def test_port4011_uefi_offer_has_no_option_43_and_no_file(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir, mode="port4011")
    request = pkt("uefi")
    offer = DhcpPacket.parse(build_offer(request, decide(request, cfg, files), cfg).encode())
    assert Opt.VENDOR_SPECIFIC not in offer.options
    assert offer.bootfile_name is None
    assert offer.server_id == IPv4Address(ADDR)


@pytest.mark.parametrize("mode", ["port4011", "direct"])
def test_ipxe_and_http_boot_offers_carry_the_url(tmp_path, ipxe_dir, mode):
    cfg, files = setup(tmp_path, ipxe_dir, mode=mode)
    for kind, url, vc in (("ipxe-efi", f"http://{ADDR}:8080/boot/{MAC}.ipxe", "PXEClient"),
                          ("http", f"http://{ADDR}:8080/ipxe/ipxe.efi", "HTTPClient")):
        request = pkt(kind)
        offer = DhcpPacket.parse(build_offer(request, decide(request, cfg, files), cfg).encode())
        assert offer.bootfile_name.rstrip("\0") == url
        assert offer.vendor_class == vc
        if kind == "http":
            assert Opt.VENDOR_SPECIFIC not in offer.options


def test_ack_names_the_file_and_echoes_the_boot_item(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir)
    spec = ClientSpec(MAC, "bios")
    req = DhcpPacket.parse(request_packet(spec, 77, "10.77.0.150", MENU_ITEM_TYPE).encode())
    answer = decide(req, cfg, files, menu_allowed=False)
    assert not answer.menu
    ack = DhcpPacket.parse(build_ack(req, answer, cfg).encode())
    assert ack.message_type is MessageType.ACK and ack.xid == 77
    assert ack.bootfile_name.rstrip("\0") == "undionly.kpxe"
    assert ack.ciaddr == IPv4Address("10.77.0.150")
    assert ack.pxe_boot_item == (MENU_ITEM_TYPE, 0)


def test_guid_echoed_only_when_sent(tmp_path, ipxe_dir):
    cfg, files = setup(tmp_path, ipxe_dir, mode="direct")
    guid = uuid.UUID("8f0e2d1a-0000-4000-8000-000000000001")
    with_guid = pkt("uefi", guid=guid)
    offer = build_offer(with_guid, decide(with_guid, cfg, files), cfg)
    assert offer.client_guid == guid
    without = pkt("uefi")
    del without.options[Opt.CLIENT_GUID]
    offer = build_offer(without, decide(without, cfg, files), cfg)
    assert Opt.CLIENT_GUID not in offer.options


# ------------------------------------------------------------------ reply target

def test_reply_target_rules():
    src = ("10.0.0.9", 68)
    p = pkt("bios")
    assert reply_target(p, src, 67) == ("255.255.255.255", 68)
    p.ciaddr = IPv4Address("10.77.0.150")
    assert reply_target(p, src, 67) == ("10.77.0.150", 68)
    p.giaddr = IPv4Address("10.5.0.1")  # relayed wins over ciaddr
    assert reply_target(p, src, 67) == ("10.5.0.1", 67)
    # Off the standard port (tests, simulations): back to the sender.
    assert reply_target(p, ("127.0.0.1", 40000), 6767) == ("127.0.0.1", 40000)
    assert reply_target(pkt("bios"), ("127.0.0.1", 40000), 6767) == ("127.0.0.1", 40000)


# ------------------------------------------------------------------ sightings

def test_sighting_facts_from_ipxe():
    p = pkt("ipxe-efi", guid=uuid.UUID(int=5))
    p.options[50] = IPv4Address("10.77.0.123").packed
    a = Answer(ClientKind.IPXE, MAC, FirmwareArch.UEFI_X64, "u", "PXEClient")
    f = sighting_facts(p, a)
    assert f["stage"] == "ipxe" and f["arch"] is FirmwareArch.UEFI_X64
    assert f["ipxe_version"] == "1.21.1" and f["ipxe_busid"] == "PCI:1af4:1000"
    assert f["uuid"] == str(uuid.UUID(int=5)) and f["last_ip"] == "10.77.0.123"
    assert f["vendor_class"].startswith("PXEClient")


# ------------------------------------------------------------------ boot files

def test_resolve_search_order_and_safety(tmp_path, ipxe_dir):
    root = tmp_path / "tftp"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.bin").write_bytes(b"a")
    (root / "undionly.kpxe").write_bytes(b"shadowed")
    secret = tmp_path / "secret"
    secret.write_text("no")
    os.symlink(secret, root / "link-out")
    os.symlink(root / "sub" / "a.bin", root / "link-in")
    profile = make_profile(tmp_path, ipxe_dir=ipxe_dir, tftp_root=root)
    files = BootFiles(profile, "rack1", system_dirs=())
    assert files.resolve("undionly.kpxe") == ipxe_dir / "undionly.kpxe"  # iPXE dir first
    assert files.resolve("sub/a.bin") == root / "sub" / "a.bin"
    assert files.resolve("/sub/a.bin") == root / "sub" / "a.bin"  # leading slash stripped
    assert files.resolve("link-in") == root / "sub" / "a.bin"
    for bad in ("../secret", "sub/../../secret", "..\\secret", "link-out", "a\0b",
                "sub/\x01", "missing"):
        assert files.resolve(bad) is None, bad
    with pytest.raises(Refused):
        files.find("link-out")
    with pytest.raises(Refused):
        files.find("../secret")


def test_system_ipxe_when_no_ipxe_dir(tmp_path):
    sysdir = tmp_path / "sys"
    sysdir.mkdir()
    (sysdir / "undionly.kpxe").write_bytes(b"x")
    profile = make_profile(tmp_path)
    files = BootFiles(profile, "rack1", system_dirs=(sysdir,))
    assert files.resolve("undionly.kpxe") == sysdir / "undionly.kpxe"
    assert files.ipxe_binary_for(FirmwareArch.BIOS) == "undionly.kpxe"
    assert files.ipxe_binary_for(FirmwareArch.UEFI_X64) is None


def test_tftp_resolver_adapter(tmp_path, ipxe_dir):
    profile = make_profile(tmp_path, ipxe_dir=ipxe_dir)
    resolver = BootFiles(profile, "rack1", system_dirs=()).tftp_resolver()
    assert Path(resolver("ipxe.efi", ("127.0.0.1", 1)).path) == ipxe_dir / "ipxe.efi"
    with pytest.raises(Refused) as err:
        resolver("nothing.here", ("127.0.0.1", 1))
    assert err.value.code == 1


# ------------------------------------------------------------------ bind errors

def test_bind_error_messages_name_the_service_and_the_fix():
    import errno

    from fleet.boot.proxydhcp import describe_os_error

    def msg(code, interface=None):
        return describe_os_error(OSError(code, os.strerror(code)), service="proxyDHCP",
                                 address=ADDR, port=67, interface=interface, site="rack1")

    assert "port 67 is in use" in msg(errno.EADDRINUSE)
    assert "proxyDHCP cannot listen on 10.77.0.1:67" in msg(errno.EADDRINUSE)
    denied = msg(errno.EACCES)
    assert "ports below 1024 need root or CAP_NET_BIND_SERVICE" in denied
    assert "CAP_NET_RAW" in msg(errno.EPERM, "br0")
    assert "interface 'br9' does not exist" in msg(errno.ENODEV, "br9")
    assert "address 10.77.0.1 is not on this host" in msg(errno.EADDRNOTAVAIL)


def test_interface_for_address():
    from fleet.boot.proxydhcp import interface_for_address

    assert interface_for_address("127.0.0.1") == "lo"
    assert interface_for_address("192.0.2.123") is None  # TEST-NET-1: nobody's
    assert interface_for_address("not an address") is None
