"""The control socket: `fleet --headless CMD` run by a fleet that is already running.

A console or a `fleet --headless serve` listens on a unix socket in the user's
runtime directory, one per profile (address.py). A headless command started
beside it sends its argv there (client.py); the running process parses it with
the same parser and runs the same handler against its own engine, so `exec`
uses the pooled, already authenticated SSH connections (server.py). Output and
`fleet: ...` lines stream back as JSON lines (fleet.sites.protocol's framing),
then the exit code (wire.py).

Why here: the server runs headless handlers, so it lives in fleet.headless. The
console must not import fleet.headless (sibling layers), so fleet.cli, the top
layer, hands the console a "service" (start it with the engine, close it before
the engine) that starts this server; `serve` starts it itself.
"""
