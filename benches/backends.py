#!/usr/bin/env python3
"""Many HTTP/idle-TCP backends in one process, for rsbal benchmarks.

Listens on PORT at every address given (127.x.y.z), answers any HTTP request
with 200 and keeps connections that send nothing open (IdleConnection).
Prints "ready" once every listener is up; runs until killed.

    backends.py PORT ADDR [ADDR ...]
"""
import asyncio
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def handle(reader, writer):
    buf = b""
    try:
        while True:
            data = await reader.read(4096)
            if not data:
                break
            buf += data
            if b"\r\n\r\n" in buf:
                writer.write(RESPONSE)
                await writer.drain()
                break
    except ConnectionError:
        pass
    writer.close()


async def main(port, addrs):
    servers = [await asyncio.start_server(handle, a, port, backlog=256) for a in addrs]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
