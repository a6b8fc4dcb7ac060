"""Golden DHCP packets, hand-assembled from what the clients are known to send
(iPXE's dhcp.c, EDK2's PxeBcDhcp4/HttpBootDhcp4, an Intel BIOS ROM behind a
relay), one option per line: the codec's tests check them, its fuzz mutates them.
"""

from __future__ import annotations

import struct
import uuid
from ipaddress import IPv4Address

from fleet.boot.dhcp import DhcpPacket

COOKIE = bytes.fromhex("63825363")


def bootp(
    *,
    op: int = 1,
    xid: int,
    mac: str,
    hops: int = 0,
    secs: int = 0,
    flags: int = 0,
    ciaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    sname: bytes = b"",
    file: bytes = b"",
    options: list[bytes],
) -> bytes:
    """The 236-byte BOOTP header, the cookie, then the option bytes as given."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        op, 1, 6, hops, xid, secs, flags,
        IPv4Address(ciaddr).packed, bytes(4), bytes(4), IPv4Address(giaddr).packed,
        bytes.fromhex(mac.replace(":", "")), sname, file,
    )  # fmt: skip
    return header + COOKIE + b"".join(options)


H = bytes.fromhex
GUID = uuid.UUID("2a6b8f4e-1c3d-4b5a-9e8f-0123456789ab")
# EDK2's request list (trimmed), and iPXE's.
PRL_EDK2 = H(
    "37 23 01 02 03 04 05 06 0c 0d 0f 11 12 16 17 1c 28 29 2a 2b 32 33 36 3a 3b 3c 42 43 61 80 81 82 83 84 85 86 87"
)
PRL_IPXE = H("37 17 01 03 06 07 0c 0f 11 1a 2b 3c 42 43 77 80 81 82 83 84 85 86 87 af cb")

# QEMU + SeaBIOS, virtio-net NIC ROM = iPXE 1.0.0.
IPXE_BIOS_DISCOVER = bootp(
    xid=0x1A2B3C4D, mac="52:54:00:12:34:56", secs=4, flags=0x8000,
    options=[
        H("35 01 01"),                                   # 53 DHCPDISCOVER
        H("39 02 05 c0"),                                # 57 max message size 1472
        H("5d 02 00 00"),                                # 93 arch 0: BIOS
        H("5e 03 01 02 01"),                             # 94 UNDI 2.1
        H("3c 20") + b"PXEClient:Arch:00000:UNDI:002001",  # 60
        H("4d 04") + b"iPXE",                            # 77 plain string, not RFC 3004
        PRL_IPXE,                                        # 55
        H("af 27"                                        # 175, 39 bytes:
          "13 01 01  15 01 01  17 01 01  18 01 01  19 01 01"  # HTTP TFTP DNS bzImage multiboot
          "21 01 01  22 01 01  23 01 01  27 01 01"       # PXE ELF COMBOOT menu
          "eb 03 01 00 00"                               # version 1.0.0
          "b1 05 01 1a f4 10 00"),                       # bus id: PCI 1af4:1000
        H("3d 07 01 52 54 00 12 34 56"),                 # 61 client id: htype 1 + MAC
        H("61 11 00") + GUID.bytes,                      # 97 type 0 + GUID
        H("ff"),
    ],
)  # fmt: skip

# OVMF's own PXE client (no NIC ROM): x64 UEFI.
OVMF_PXE_DISCOVER = bootp(
    xid=0x0BADCAFE, mac="52:54:00:ab:cd:ef",
    options=[
        H("35 01 01"),                                   # 53 DHCPDISCOVER
        H("39 02 05 c0"),                                # 57
        PRL_EDK2,                                        # 55
        H("61 11 00") + GUID.bytes,                      # 97
        H("5e 03 01 03 00"),                             # 94 UNDI 3.0
        H("5d 02 00 07"),                                # 93 arch 7: x64 UEFI
        H("3c 20") + b"PXEClient:Arch:00007:UNDI:003000",  # 60
        H("ff"),
    ],
)  # fmt: skip

# The same client after the proxy offer: REQUEST to port 4011 with its address.
OVMF_PXE_REQUEST_4011 = bootp(
    xid=0x0BADCAFF, mac="52:54:00:ab:cd:ef", ciaddr="10.77.0.50",
    options=[
        H("35 01 03"),                                   # 53 DHCPREQUEST
        H("39 02 05 c0"),                                # 57
        PRL_EDK2,                                        # 55
        H("61 11 00") + GUID.bytes,                      # 97
        H("5e 03 01 03 00"),                             # 94
        H("5d 02 00 07"),                                # 93
        H("3c 20") + b"PXEClient:Arch:00007:UNDI:003000",  # 60
        H("2b 07 47 04 00 00 00 00 ff"),                 # 43: sub 71 boot item type 0 layer 0, End
        H("ff"),
    ],
)  # fmt: skip

# OVMF HTTP Boot: vendor class HTTPClient, arch 16, a zero GUID.
UEFI_HTTP_DISCOVER = bootp(
    xid=0x48545450, mac="52:54:00:00:00:16",
    options=[
        H("35 01 01"),                                   # 53 DHCPDISCOVER
        H("39 02 05 c0"),                                # 57
        H("37 1b 01 02 03 04 05 06 0c 0d 0f 11 12 16 17 1c 28 29 2a 2b 32 33 36 3a 3b 3c 42 43 61"),  # 55
        H("61 11 00") + bytes(16),                       # 97 all zeros: no GUID
        H("5e 03 01 03 00"),                             # 94
        H("5d 02 00 10"),                                # 93 arch 16: x64 UEFI HTTP
        H("3c 21") + b"HTTPClient:Arch:00016:UNDI:003000",  # 60
        H("ff"),
    ],
)  # fmt: skip

# An Intel BIOS ROM behind a relay: hops 1, giaddr set, option 82 added, no 97.
RELAYED_BIOS_DISCOVER = bootp(
    xid=0x00C0FFEE, mac="00:1b:21:0a:0b:0c", hops=1, giaddr="10.91.0.1", secs=8,
    options=[
        H("35 01 01"),                                   # 53 DHCPDISCOVER
        H("39 02 04 ec"),                                # 57 max size 1260
        H("5d 02 00 00"),                                # 93 BIOS
        H("5e 03 01 02 01"),                             # 94 UNDI 2.1
        PRL_EDK2,                                        # 55 (any list will do)
        H("3c 20") + b"PXEClient:Arch:00000:UNDI:002001",  # 60
        H("52 11 01 07") + b"Gi1/0/7"                    # 82: circuit id
        + H("02 06 00 1b 21 0a 0b 0c"),                  #     remote id
        H("ff"),
    ],
)  # fmt: skip

# Option overload (52 = 3): options continue in `file`, then `sname`; option
# 60 is split between the options field and `file` (RFC 3396).
OVERLOADED_DISCOVER = bootp(
    xid=0x0F0F0F0F, mac="52:54:00:0f:0f:0f",
    file=(H("3c 04") + b"ient"                           # 60, second part
          + H("5d 02 00 07")                             # 93
          + H("ff")),
    sname=(H("61 11 00") + GUID.bytes                    # 97
           + H("4d 04") + b"iPXE"                        # 77
           + H("ff")),
    options=[
        H("35 01 01"),                                   # 53 DHCPDISCOVER
        H("34 01 03"),                                   # 52 overload: file and sname
        H("3c 05") + b"PXECl",                           # 60, first part
        H("ff"),
    ],
)  # fmt: skip

GOLDEN = {
    "ipxe_bios_discover": IPXE_BIOS_DISCOVER,
    "ovmf_pxe_discover": OVMF_PXE_DISCOVER,
    "ovmf_pxe_request_4011": OVMF_PXE_REQUEST_4011,
    "uefi_http_discover": UEFI_HTTP_DISCOVER,
    "relayed_bios_discover": RELAYED_BIOS_DISCOVER,
    "overloaded_discover": OVERLOADED_DISCOVER,
}

ACCESSORS = [name for name, v in vars(DhcpPacket).items() if isinstance(v, property)]
