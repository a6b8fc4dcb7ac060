"""The PXE client lives in fleet.sim (the demo's machines use it); tests import it here."""

from fleet.sim.pxe_client import *  # noqa: F401,F403
from fleet.sim.pxe_client import (KINDS, BootResult, ClientSpec, DhcpSocket, Kind,  # noqa: F401
                                  boot, boot_file_of, discover_packet, http_get,
                                  is_proxy_offer, menu_item_of, new_xid, random_mac,
                                  request_packet)
