"""Fuzz the DHCP codec: only DhcpError may escape parse and the accessors.

120,000 packets by default: the golden packets of support/dhcp_golden.py and
encoded proxy replies, mutated (bit flips, truncations, inserted and removed
bytes, option length fields set to extremes, overload injected, splices) and
plain random bytes. A seeded `random.Random` keeps it fast and repeatable;
FLEET_DHCP_FUZZ_SEED and FLEET_DHCP_FUZZ_N change the seed and the count.
Every packet that parses is also re-encoded and parsed again (must be equal),
and answered with a proxy ACK.
"""

from __future__ import annotations

import os
import random
import re
import time

import pytest

from fleet.boot import dhcp_options as o
from fleet.boot.dhcp import DhcpError, DhcpPacket
from fleet.boot.dhcp_replies import build_proxy_ack, build_proxy_offer
from fleet.boot.dhcp_options import IpxeFeature, PxeMenuItem, PxeSub, pxe_menu
from support.dhcp_golden import ACCESSORS, GOLDEN

SEED = int(os.environ.get("FLEET_DHCP_FUZZ_SEED", "20261101"))
N = int(os.environ.get("FLEET_DHCP_FUZZ_N", "120000"))
SERVER = "10.77.0.1"

_LENGTH_EXTREMES = (0, 1, 2, 3, 4, 5, 16, 17, 127, 128, 253, 254, 255)


def _corpus() -> list[bytes]:
    corpus = list(GOLDEN.values())
    for raw in GOLDEN.values():
        req = DhcpPacket.parse(raw)
        corpus.append(build_proxy_offer(req, SERVER, "undionly.kpxe").encode())
        corpus.append(build_proxy_ack(req, SERVER, "http://10.77.0.1:8080/boot/x.ipxe").encode())
    menu = pxe_menu([PxeMenuItem(0, "local"), PxeMenuItem(0x8000, "fleet")], server_ip=SERVER, timeout=3)
    req = DhcpPacket.parse(GOLDEN["relayed_bios_discover"])
    corpus.append(build_proxy_offer(req, SERVER, None, pxe_options=menu).encode())
    big = DhcpPacket.parse(GOLDEN["ipxe_bios_discover"])
    big.options[43] = bytes(range(256)) * 2
    corpus.append(big.encode())
    big.file = big.sname = b""
    big.options[43] = b"\x47\x04\x00\x00\x00\x00\xff" + bytes(150)
    corpus.append(big.encode(max_size=576))  # overloaded
    return corpus


def _length_positions(raw: bytes) -> list[int]:
    """Offsets of option length bytes in the options field."""
    out = []
    i = 240
    while i + 1 < len(raw):
        code = raw[i]
        if code == 0:
            i += 1
            continue
        if code == 255:
            break
        out.append(i + 1)
        i += 2 + raw[i + 1]
    return out


def _pos(rng: random.Random, n: int) -> int:
    """A position in range(n): three times in four past the cookie, when there is room."""
    if n > 240 and rng.random() < 0.75:
        return rng.randrange(240, n)
    return rng.randrange(n)


def _mutate(rng: random.Random, raw: bytes, corpus: list[bytes], lengths: dict[bytes, list[int]]) -> bytes:
    b = bytearray(raw)
    kind = rng.randrange(9)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            bit = rng.randrange(len(b) * 8)
            b[bit // 8] ^= 1 << (bit % 8)
    elif kind == 1:  # truncation, mostly inside the options
        del b[_pos(rng, len(b) + 1) :]
    elif kind == 2:  # inserted bytes, mostly among the options
        pos = _pos(rng, len(b) + 1)
        b[pos:pos] = rng.randbytes(rng.randint(1, 24))
    elif kind == 3:  # removed bytes, mostly among the options
        pos = _pos(rng, len(b))
        del b[pos : pos + rng.randint(1, 24)]
    elif kind == 4:  # an option length set to an extreme
        positions = lengths.get(raw) or [240 + 1]
        pos = rng.choice(positions)
        if pos < len(b):
            b[pos] = rng.choice(_LENGTH_EXTREMES + ((b[pos] + 1) % 256, (b[pos] - 1) % 256))
    elif kind == 5:  # interesting bytes at random places
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.choice((0x00, 0xFF, 0x34, 0x2B, 0xAF, 0x4D, rng.randrange(256)))
    elif kind == 6:  # inject option overload, maybe with options in file/sname
        b[240:240] = bytes((52, rng.choice((1, 1, 1, 2)), rng.randrange(5), rng.randrange(256)))[
            : rng.choice((2, 3, 3, 3, 4))
        ]
        if rng.random() < 0.7:
            start, size = rng.choice(((108, 128), (44, 64)))
            body = bytearray()
            while len(body) < size - 3 and rng.random() < 0.8:
                val = rng.randbytes(rng.randint(0, 12))
                body += bytes((rng.choice((52, 53, 60, 93, 97, 175, 77, rng.randrange(256))), len(val))) + val
            if rng.random() < 0.8:
                body.append(255)
            b[start : start + size] = bytes(body[:size]).ljust(size, b"\x00")
    elif kind == 7:  # splice with another packet
        other = rng.choice(corpus)
        b = b[: rng.randrange(len(b) + 1)] + other[rng.randrange(len(other) + 1) :]
    else:  # random options after a real header
        b = b[:240] + rng.randbytes(rng.randint(0, 300))
    return bytes(b)


def _exercise(p: DhcpPacket) -> None:
    """Every accessor and decoder a server would call; DhcpError is fine."""
    for name in ACCESSORS:
        try:
            getattr(p, name)
        except DhcpError:
            pass
    try:
        p.ipxe_supports(IpxeFeature.EFI)
    except DhcpError:
        pass
    try:
        subs = p.pxe_options or {}
    except DhcpError:
        subs = {}
    for code, decode in (
        (PxeSub.BOOT_SERVERS, o.decode_pxe_boot_servers),
        (PxeSub.BOOT_MENU, o.decode_pxe_boot_menu),
        (PxeSub.MENU_PROMPT, o.decode_pxe_menu_prompt),
        (PxeSub.BOOT_ITEM, o.decode_pxe_boot_item),
    ):
        if code in subs:
            try:
                decode(subs[code])
            except DhcpError:
                pass


@pytest.mark.slow
def test_fuzz_parse_and_accessors():
    rng = random.Random(SEED)
    corpus = _corpus()
    lengths = {raw: _length_positions(raw) for raw in corpus}
    accepted = rejected = 0
    reasons: dict[str, int] = {}
    failures: list[str] = []
    started = time.perf_counter()
    for i in range(N):
        if i % 10 == 0:  # pure random bytes, some with a valid cookie
            data = rng.randbytes(rng.randint(0, 700))
            if rng.random() < 0.5 and len(data) >= 240:
                data = data[:236] + b"\x63\x82\x53\x63" + data[240:]
        else:
            data = rng.choice(corpus)
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                data = _mutate(rng, data, corpus, lengths) if data else data
        try:
            p = DhcpPacket.parse(data)
        except DhcpError as exc:
            rejected += 1
            key = re.sub(r"\d+", "N", str(exc))[:48]
            reasons[key] = reasons.get(key, 0) + 1
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test
            failures.append(f"parse {type(exc).__name__}: {exc} <- {data.hex()}")
            continue
        accepted += 1
        try:
            _exercise(p)
            once = p.encode()
            if DhcpPacket.parse(once) != p:
                failures.append(f"re-encode changed the packet <- {data.hex()}")
            if i % 7 == 0:
                try:
                    build_proxy_ack(p, SERVER, "ipxe.efi").encode()
                except DhcpError:
                    pass
        except Exception as exc:  # noqa: BLE001
            failures.append(f"accessor/encode {type(exc).__name__}: {exc} <- {data.hex()}")
        if len(failures) > 20:
            break
    elapsed = time.perf_counter() - started
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:10]
    print(f"\nDHCP fuzz seed={SEED}: {accepted + rejected} packets in {elapsed:.1f}s, "
          f"{accepted} accepted, {rejected} rejected; top reasons: {top}")  # fmt: skip
    assert not failures, "\n".join(failures[:20])
    assert accepted + rejected >= min(N, 100_000)
    assert accepted > N // 10 and rejected > N // 10  # both paths exercised


def test_fuzz_option_decoders_directly():
    rng = random.Random(SEED + 1)
    decoders = [
        o.decode_message_type, o.decode_ipv4, o.decode_u16, o.decode_text, o.decode_user_class,
        o.decode_client_arches, o.decode_client_ndi, o.decode_client_guid, o.decode_relay_agent_info,
        o.decode_pxe_options, o.decode_pxe_boot_servers, o.decode_pxe_boot_menu, o.decode_pxe_menu_prompt,
        o.decode_pxe_boot_item, o.decode_ipxe_options, o.decode_ipxe_version, o.decode_ipxe_bus_id,
    ]  # fmt: skip
    for _ in range(20_000):
        value = rng.randbytes(rng.choice((0, 1, 2, 3, 4, 5, 16, 17, rng.randint(0, 64))))
        for decode in decoders:
            try:
                decode(value)
            except DhcpError:
                pass
