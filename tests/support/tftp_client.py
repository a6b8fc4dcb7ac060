"""The TFTP client lives in fleet.sim (the demo's machines use it); tests import it here."""

from fleet.sim.tftp_client import *  # noqa: F401,F403
from fleet.sim.tftp_client import RawClient, TftpError, TftpTimeout, TransferResult, tftp_get  # noqa: F401
