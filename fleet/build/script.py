"""The iPXE script baked into boot media: get an address (retrying), then chain
the distributor's per-machine script `http://<address>:<port>/boot/${mac}.ipxe`.

Debian's iPXE has `sleep` but no HTTPS; a failed `dhcp` or `chain` waits a few
seconds and starts over, so a machine booted before the network is ready (or
while fleet is down) keeps trying instead of falling back to the next device.
When the chained script returns (it ran `exit`: "boot from disk"), the media
exits too and the firmware goes on to its next boot device.

iPXE percent-encodes the expanded `${mac}` in a URI: the request arrives as
`/boot/52%3A54%3A00%3A12%3A34%3A56.ipxe` (seen under QEMU), so the HTTP side
must decode the path (aiohttp's match_info does).
"""

from __future__ import annotations

import re

from fleet.errors import BadInput

RETRY_SECONDS = 3

_URL = re.compile(r"^http://[A-Za-z0-9.\-\[\]:]+(/[^\s]*)?$")


def chain_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/boot/${{mac}}.ipxe"


def check_url(url: str) -> str:
    if not _URL.match(url):
        raise BadInput(f"not an http:// URL iPXE can chain: {url!r} (this iPXE has no HTTPS)")
    return url


def boot_script(url: str, label: str = "fleet") -> str:
    check_url(url)
    return (
        "#!ipxe\n"
        f"echo fleet boot media {label}: chaining {url}\n"
        ":retry\n"
        "dhcp || goto wait\n"
        f"chain {url} || goto wait\n"
        "exit\n"
        ":wait\n"
        f"echo fleet: no boot script yet, trying again in {RETRY_SECONDS}s\n"
        f"sleep {RETRY_SECONDS} || echo\n"
        "goto retry\n"
    )


def check_script(text: str) -> str:
    if not text.lstrip().startswith("#!ipxe"):
        raise BadInput("an iPXE script must start with '#!ipxe'")
    if "\0" in text:
        raise BadInput("an iPXE script cannot hold NUL bytes")
    return text if text.endswith("\n") else text + "\n"
