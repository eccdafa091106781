"""The upstream for the gateway runs: a small asyncio HTTP/1.1 server in its own process.

``python -m reliability.backend`` prints its port, then serves: ``/slow?s=N`` answers
after N seconds, ``/big?mb=N`` streams N MiB, ``/smuggled`` counts a request that
should never have reached it (a smuggling probe got through), ``/stats`` reports the
count, anything else is a small 200. It parses Content-Length and chunked bodies
itself, strictly, so a request hidden in a body shows up as its own request here.
"""

from __future__ import annotations

import asyncio
import json
import sys

_stats = {"requests": 0, "smuggled": 0}


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            await reader.readexactly(size + 2) if size else await reader.readline()
            if not size:
                return
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            await _body(reader, headers)
            _stats["requests"] += 1
            path, _, query = target.partition("?")
            if path == "/smuggled":
                _stats["smuggled"] += 1
            if path == "/slow":
                await asyncio.sleep(float(query.partition("=")[2] or 1))
            if path == "/big":
                total = int(float(query.partition("=")[2] or 1) * 2**20)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
                block = b"x" * 65536
                while total > 0:
                    writer.write(block[:total])
                    total -= len(block)
                    await writer.drain()
                continue
            body = json.dumps(_stats).encode() if path == "/stats" else b"ok\n"
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
        pass
    finally:
        writer.close()


async def _main() -> None:
    server = await asyncio.start_server(
        _handle, "127.0.0.1", int((sys.argv[1:2] and sys.argv[1]) or 0)
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main())
