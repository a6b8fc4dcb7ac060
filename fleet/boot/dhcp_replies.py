"""What a proxyDHCP server sends: the OFFER (port 67) and the ACK (port 4011).

Policy-free: the caller decides which file or URL a client gets and whether to
send a menu; these functions only put the answer on the wire the way PXE and
iPXE clients expect it (see ../shared/notes/boot-facts.md). The server that
uses them is fleet.boot.proxydhcp.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from ipaddress import IPv4Address

from .dhcp import BOOTREPLY, FILE_LEN, DhcpPacket
from .dhcp_options import (
    PXE_BOOT_FILE_NO_PROMPT,
    DhcpError,
    MessageType,
    Opt,
    PxeSub,
    encode_pxe_options,
)

_ZERO = IPv4Address(0)


@functools.lru_cache(maxsize=256)
def _encoded_pxe_options(items: tuple[tuple[int, bytes], ...]) -> bytes:
    # The same few option-43 sets go into every reply of a burst.
    return encode_pxe_options(dict(items))


def _client_vendor_class(request: DhcpPacket) -> str:
    vc = request.vendor_class or ""  # decode_text never raises
    return "HTTPClient" if vc.startswith("HTTPClient") else "PXEClient"


def _proxy_reply(
    kind: MessageType,
    request: DhcpPacket,
    server_ip: IPv4Address | str,
    boot_file: str | bytes | None,
    *,
    vendor_class: str | None,
    pxe_options: Mapping[int, bytes] | None,
    tftp_server: IPv4Address | str | None,
    with_discovery_control: bool,
    echo_boot_item: bool,
    bootfile_nul: bool,
    extra_options: Mapping[int, bytes] | None,
) -> DhcpPacket:
    # (IPv4Address(an IPv4Address) parses its str() again: skip that on the hot path)
    server = server_ip if isinstance(server_ip, IPv4Address) else IPv4Address(server_ip)
    name = boot_file.encode() if isinstance(boot_file, str) else boot_file
    subs: dict[int, bytes] = {}
    if with_discovery_control:
        subs[PxeSub.DISCOVERY_CONTROL] = bytes((PXE_BOOT_FILE_NO_PROMPT,))
    if pxe_options:
        subs.update(pxe_options)
    if echo_boot_item and PxeSub.BOOT_ITEM not in subs:
        try:
            item = (request.pxe_options or {}).get(PxeSub.BOOT_ITEM)
        except DhcpError:
            item = None
        if item is not None and len(item) == 4:
            subs[PxeSub.BOOT_ITEM] = item
    options: dict[int, bytes] = {
        Opt.MESSAGE_TYPE: bytes((kind,)),
        Opt.SERVER_ID: server.packed,
        Opt.VENDOR_CLASS: (vendor_class or _client_vendor_class(request)).encode(),
    }
    guid = request.options.get(Opt.CLIENT_GUID)
    if guid is not None:
        options[Opt.CLIENT_GUID] = guid
    if subs:
        encoded = _encoded_pxe_options(tuple(subs.items()))
        if len(encoded) > 255:
            # PXE ROMs do not reassemble RFC 3396 splits.
            raise DhcpError(f"option 43 is {len(encoded)} bytes; PXE clients read at most 255")
        options[Opt.VENDOR_SPECIFIC] = encoded
    if name:
        options[Opt.BOOTFILE_NAME] = name + b"\x00" if bootfile_nul else name
    if extra_options:
        options.update(extra_options)
    return DhcpPacket(
        op=BOOTREPLY,
        htype=request.htype,
        hlen=request.hlen,
        hops=0,
        xid=request.xid,
        secs=0,
        flags=request.flags,
        ciaddr=request.ciaddr if kind == MessageType.ACK else _ZERO,
        yiaddr=_ZERO,
        siaddr=server if tftp_server is None else (
            tftp_server if isinstance(tftp_server, IPv4Address) else IPv4Address(tftp_server)),
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        # 127 bytes + NUL: some PXE ROMs need the terminator. Longer names
        # (URLs) travel in option 67 only.
        file=name if name and len(name) < FILE_LEN else b"",
        options={int(code): bytes(value) for code, value in options.items()},
    )


def build_proxy_offer(
    request: DhcpPacket,
    server_ip: IPv4Address | str,
    boot_file: str | bytes | None,
    *,
    vendor_class: str | None = None,
    pxe_options: Mapping[int, bytes] | None = None,
    tftp_server: IPv4Address | str | None = None,
    with_discovery_control: bool = True,
    bootfile_nul: bool = True,
    extra_options: Mapping[int, bytes] | None = None,
) -> DhcpPacket:
    """The proxyDHCP OFFER answering a PXE DISCOVER (port 67).

    yiaddr 0; xid, flags, giaddr, chaddr echoed; siaddr = `tftp_server` or
    `server_ip`; options 53 OFFER, 54 `server_ip`, 60 (`vendor_class`, by
    default `HTTPClient` or `PXEClient` to match the client), 97 echoed only
    when the client sent it, 43 from `pxe_options` plus `{6: 0x08}` when
    `with_discovery_control`, 67 and `file` = `boot_file` (None: no file, e.g.
    a menu offer). `bootfile_nul` NUL-terminates option 67 as dnsmasq does
    for ROMs that need it. The caller decides what to boot.
    """
    return _proxy_reply(
        MessageType.OFFER, request, server_ip, boot_file,
        vendor_class=vendor_class, pxe_options=pxe_options, tftp_server=tftp_server,
        with_discovery_control=with_discovery_control, echo_boot_item=False,
        bootfile_nul=bootfile_nul, extra_options=extra_options,
    )  # fmt: skip


def build_proxy_ack(
    request: DhcpPacket,
    server_ip: IPv4Address | str,
    boot_file: str | bytes | None,
    *,
    vendor_class: str | None = None,
    pxe_options: Mapping[int, bytes] | None = None,
    tftp_server: IPv4Address | str | None = None,
    with_discovery_control: bool = False,
    bootfile_nul: bool = True,
    extra_options: Mapping[int, bytes] | None = None,
) -> DhcpPacket:
    """The ACK answering a PXE REQUEST on port 4011.

    As `build_proxy_offer`, with option 53 ACK, ciaddr echoed, and the
    client's option 43 sub-option 71 (boot item) echoed back when it sent one
    and `pxe_options` does not set it.
    """
    return _proxy_reply(
        MessageType.ACK, request, server_ip, boot_file,
        vendor_class=vendor_class, pxe_options=pxe_options, tftp_server=tftp_server,
        with_discovery_control=with_discovery_control, echo_boot_item=True,
        bootfile_nul=bootfile_nul, extra_options=extra_options,
    )  # fmt: skip
