"""python3 -m orchestrator.proxy PROTO:PORT=ADDR:PORT ... : relay [::1]:PORT to [ADDR]:PORT."""
from __future__ import annotations

import asyncio
import sys

UDP_IDLE = 60.0  # seconds a UDP client's relay stays open without traffic


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()


def tcp(target: tuple[str, int]):
    async def handle(reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection(*target)
        except OSError:
            writer.close()  # the container refuses: so does its published port
            return
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        for w in (writer, up_w):
            w.close()
    return handle


class Udp(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.clients: dict = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        relay = self.clients.get(addr)
        if relay is None:
            asyncio.ensure_future(self._open(addr, data))
        else:
            relay[0].sendto(data)
            relay[1] = asyncio.get_running_loop().time()

    async def _open(self, addr, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        back = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data, _addr):
                back.transport.sendto(data, addr)
                back.clients[addr][1] = loop.time()
        t, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.target)
        self.clients[addr] = [t, loop.time()]
        t.sendto(first)

    async def expire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(UDP_IDLE / 4)
            for addr, (t, last) in list(self.clients.items()):
                if loop.time() - last > UDP_IDLE:
                    t.close()
                    del self.clients[addr]


def parse(arg: str) -> tuple[str, int, tuple[str, int]]:
    proto, _, rest = arg.partition(":")
    port, _, target = rest.partition("=")
    host, _, tport = target.rpartition(":")
    return proto, int(port), (host.strip("[]"), int(tport))


async def main(args: list[str]) -> None:
    loop = asyncio.get_running_loop()
    tasks = []
    for arg in args:
        proto, port, target = parse(arg)
        if proto == "tcp":
            await asyncio.start_server(tcp(target), "::1", port)
        else:
            _, proto_obj = await loop.create_datagram_endpoint(lambda t=target: Udp(t), local_addr=("::1", port))
            tasks.append(asyncio.ensure_future(proto_obj.expire()))
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1:]))
    except KeyboardInterrupt:
        pass
