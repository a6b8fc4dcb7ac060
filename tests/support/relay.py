"""A TCP relay that adds a fixed one-way delay each way: a slow link for tests.

Why hand-written: this kernel has no netem (`tc qdisc add ... netem` answers
"Specified qdisc kind is unknown"; tc itself is installed, the qdisc is not
built), and a relay this size is simpler to read and trust than any dependency
(toxiproxy, for one, is a Go daemon driven over HTTP).

The model, per connection and per direction:
- Each chunk is stamped when it arrives and written out at arrival + delay, in
  order. A stream pays the delay once, as on a real link, not once per chunk.
- At most `window` bytes are held; beyond that the relay stops reading, so the
  sender's socket fills and its writes block (backpressure). Throughput is
  therefore bounded by window / delay, like a TCP window on a long link:
  4 MiB / 250 ms = 16 MiB/s.
- End of stream travels like data (one delay later) and half-closes the far
  side; a connection closes when both directions have ended. A reset on one
  side aborts the other.
- The relay terminates TCP, so the client's connect completes at once; the
  upstream connect is made one delay later (when the SYN would arrive) and
  nothing reaches the target before it.
- `cut()` is a partition: nothing crosses, either way, on any connection, and
  new connections wait for the heal before going upstream. Bytes are held, not
  dropped: TCP retransmits what a real partition drops, so a stream stalls and
  resumes after `heal()` (each held chunk crossing one delay after the heal),
  unless its endpoints give up first, as they would on a real link.
  `reset()` aborts every connection (a partition that outlived TCP's patience).

Use it in-process (`async with Relay(("127.0.0.1", port), delay=0.25) as r:`
then connect to `r.address`) or as a process, which can run inside a network
namespace with `ip netns exec`:

    python -m support.relay --listen 10.77.0.1:2222 --to 10.77.0.5:22 --delay-ms 250

(with tests/ on PYTHONPATH). It prints `relay listening on HOST:PORT` when it
accepts; SIGUSR1 cuts, SIGUSR2 heals, SIGTERM exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import sys

CHUNK = 64 * 1024
WINDOW = 4 * 1024 * 1024


class Relay:
    def __init__(self, target: tuple[str, int], *, delay: float,
                 listen: tuple[str, int] = ("127.0.0.1", 0), window: int = WINDOW):
        self.target = target
        self.delay = delay
        self.listen = listen
        self.window = window
        self.address: tuple[str, int] | None = None
        self.peak_in_flight = 0  # most bytes ever held by one direction
        self.connections = 0     # accepted so far
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # ------------------------------------------------------------ control
    async def start(self) -> "Relay":
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    @property
    def is_cut(self) -> bool:
        return not self._open.is_set()

    def reset(self) -> None:
        """Abort every connection (both sides see a reset)."""
        for w in list(self._writers):
            w.transport.abort()

    async def close(self) -> None:
        if self._server:
            self._server.close()
        self.reset()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()

    async def __aenter__(self) -> "Relay":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ------------------------------------------------------------ relaying
    def _accept(self, c_reader, c_writer) -> None:
        self.connections += 1
        task = asyncio.ensure_future(self._connection(c_reader, c_writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cross(self, since: float) -> None:
        """Wait until something sent at `since` has crossed the link (open or healed)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, since + self.delay - loop.time()))
        if not self._open.is_set():
            await self._open.wait()
            await asyncio.sleep(self.delay)

    async def _connection(self, c_reader, c_writer) -> None:
        self._writers.add(c_writer)
        loop = asyncio.get_running_loop()
        up = Direction(self, c_reader)  # client -> target: reading starts now
        pumps = [asyncio.ensure_future(up.read())]
        t_writer = None
        try:
            await self._cross(loop.time())  # the SYN's trip
            try:
                t_reader, t_writer = await asyncio.open_connection(*self.target)
            except OSError:
                c_writer.transport.abort()  # as a refused or unreachable connect looks
                return
            self._writers.add(t_writer)
            down = Direction(self, t_reader)
            pumps += [asyncio.ensure_future(c) for c in
                      (up.write(t_writer), down.read(), down.write(c_writer))]
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done):
                c_writer.transport.abort()
                t_writer.transport.abort()
        finally:
            for t in pumps:
                t.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (c_writer, t_writer):
                if w is not None:
                    w.close()
                    self._writers.discard(w)


class Direction:
    """One direction of one connection: what is read, stamped and queued."""

    def __init__(self, relay: Relay, reader: asyncio.StreamReader):
        self.relay = relay
        self.reader = reader
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.in_flight = 0
        self.grew = asyncio.Event()
        self.shrank = asyncio.Event()

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.in_flight >= self.relay.window:
                self.shrank.clear()
                await self.shrank.wait()  # backpressure: stop reading
            try:
                data = await self.reader.read(CHUNK)  # b"" is end of stream
            except OSError:
                data = None  # a reset travels too
            self.queue.append((loop.time(), data))
            self.in_flight += len(data or b"")
            self.relay.peak_in_flight = max(self.relay.peak_in_flight, self.in_flight)
            self.grew.set()
            if not data:
                return

    async def write(self, writer: asyncio.StreamWriter) -> None:
        while True:
            while not self.queue:
                self.grew.clear()
                await self.grew.wait()
            arrived, data = self.queue[0]
            await self.relay._cross(arrived)
            self.queue.popleft()
            if data is None:
                raise ConnectionResetError("peer reset")
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            self.in_flight -= len(data)
            self.shrank.set()


# ---------------------------------------------------------------- process

def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def _main(args) -> None:
    relay = Relay(_host_port(args.to), delay=args.delay_ms / 1000,
                  listen=_host_port(args.listen), window=args.window)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, relay.cut)
    loop.add_signal_handler(signal.SIGUSR2, relay.heal)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with relay:
        host, port = relay.address
        print(f"relay listening on {'[' + host + ']' if ':' in host else host}:{port}",
              flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m support.relay", description=__doc__.split("\n")[0])
    p.add_argument("--listen", required=True, help="HOST:PORT to accept on (port 0: any)")
    p.add_argument("--to", required=True, help="HOST:PORT to relay to")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay, each way")
    p.add_argument("--window", type=int, default=WINDOW, help="bytes held per direction")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
