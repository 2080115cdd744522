"""A milter that lets everything through and does nothing else: the floor of the milter chain.

    python bench/null_milter.py PORT

bench/chain.py runs it as "Postfix + null milter": Postfix as the milter page configures it,
talking to a milter that negotiates exactly as congvu's does (the same no-reply stages, the
same macros, through the same wire loop, gateway.milter.MilterConnection) and answers
"continue" at once, without judging, recording or logging anything. What Postfix spends per
message beyond Postfix alone is then the milter protocol's cost on Postfix's side, which no
milter can avoid; what is left between this chain and congvu's is congvu's own work.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kilter.protocol.messages import Message, Negotiate

from gateway.milter import MilterConnection, negotiate


class NullConnection(MilterConnection):
    async def on(self, message: Message) -> list[Message] | None:
        return [negotiate(message)] if isinstance(message, Negotiate) else None


async def serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await NullConnection(writer).run(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
