"""The peer side's plain HTTP server for the boot benches (dnsmasq serves DHCP and
TFTP only): a static folder over aiohttp, run as `python -c STATIC_HTTP ROOT HOST PORT`,
printing "ready" once it listens."""

STATIC_HTTP = r"""
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
print("ready", flush=True)
web.run_app(app, host=sys.argv[2], port=int(sys.argv[3]), print=None, access_log=None)
"""
