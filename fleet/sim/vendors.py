"""Who made the simulated machines: real server makers' OUIs and firmware kinds.

The OUIs are registered to these makers in the IEEE registry netaddr ships, so
the console's vendor column is netaddr's own answer (`fleet.oui.nic_vendor`),
not a label the demo made up. The rest of each MAC is drawn from the demo's seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# maker -> (OUIs registered to it, product names for the hold loop's facts)
MAKERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Dell": (("00:14:22", "18:66:da", "f8:bc:12", "14:18:77", "e4:43:4b"),
             ("PowerEdge R650", "PowerEdge R750", "PowerEdge R6515")),
    "HPE": (("94:18:82", "48:df:37", "9c:dc:71", "b8:83:03"),
            ("ProLiant DL360 Gen10", "ProLiant DL380 Gen11")),
    "Supermicro": (("00:25:90", "0c:c4:7a", "ac:1f:6b"),
                   ("SYS-1029P-WTR", "AS-1114S-WN10RT")),
    "Lenovo": (("a4:8c:db", "10:c5:95", "80:96:21"),
               ("ThinkSystem SR630", "ThinkSystem SR650 V2")),
    "Intel": (("3c:fd:fe", "a0:36:9f", "b4:96:91"),
              ("S2600WFT", "M50CYP2SB")),
}

MANUFACTURER = {"Dell": "Dell Inc.", "HPE": "HPE", "Supermicro": "Supermicro",
                "Lenovo": "Lenovo", "Intel": "Intel Corporation"}

# firmware kind -> (pxe_client kind before iPXE, after, iPXE ${platform}, ${buildarch})
FIRMWARE = {
    "bios": ("bios", "ipxe-bios", "pcbios", "i386"),
    "uefi": ("uefi", "ipxe-efi", "efi", "x86_64"),
    "arm64": ("arm64", "ipxe-arm64", "efi", "arm64"),
}
# How often each firmware kind turns up (BIOS is getting rare; ARM64 a few racks).
FIRMWARE_WEIGHTS = (("uefi", 6), ("bios", 3), ("arm64", 2))


@dataclass(frozen=True)
class Hardware:
    mac: str
    maker: str
    manufacturer: str
    product: str
    serial: str
    firmware: str  # bios | uefi | arm64


def make_hardware(rng: random.Random, index: int, used: set[str]) -> Hardware:
    maker = rng.choice(sorted(MAKERS))
    ouis, products = MAKERS[maker]
    while True:
        mac = rng.choice(ouis) + ":" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))
        if mac not in used:
            used.add(mac)
            break
    names, weights = zip(*FIRMWARE_WEIGHTS)
    # ARM64 boxes are the Supermicro/HPE Ampere ones; the others are x86
    firmware = rng.choices(names, weights)[0]
    if firmware == "arm64" and maker not in ("Supermicro", "HPE"):
        firmware = "uefi"
    serial = f"{maker[:2].upper()}{rng.randrange(10**7):07d}"
    return Hardware(mac=mac, maker=maker, manufacturer=MANUFACTURER[maker],
                    product=rng.choice(products), serial=serial, firmware=firmware)
