"""Against a scripted node (a few lines of websockets server): what a real
node should never do, but the client must survive: seqs skipped in the live
stream, an epoch changing under a live connection."""

from __future__ import annotations

import asyncio
import importlib
import json
import unittest
import uuid
from http import HTTPStatus
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

from switchboard_client import Message, Room, connect

try:
    _serve: Any = importlib.import_module("websockets.asyncio.server").serve
except ImportError:  # websockets 12: no asyncio server API to script with
    _serve = None

EPOCH = "e1"


def frame(seq: int, epoch: str = EPOCH) -> Dict[str, Any]:
    # One id per message: the same seq in another epoch is another message.
    return {"type": "message", "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{epoch}/{seq}")), "room": "r", "from": "x",
            "text": f"m{seq}", "ts": 0, "seq": seq, "epoch": epoch}


class FakeNode:
    """Answers ``join`` with position 0 of ``EPOCH``, then sends ``live``;
    the history API serves ``stored`` by ``after_seq``."""

    def __init__(self, live: List[Dict[str, Any]], stored: List[int]) -> None:
        self.live = live
        self.stored = stored
        self.http_requests: List[str] = []
        self.server: Any = None
        self.port = 0

    async def start(self) -> "FakeNode":
        self.server = await _serve(self.handle, "127.0.0.1", 0, process_request=self.http)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def http(self, connection: Any, request: Any) -> Optional[Any]:
        if not request.path.startswith("/api/"):
            return None
        self.http_requests.append(request.path)
        query = parse_qs(urlsplit(request.path).query)
        after = int(query["after_seq"][0])
        page = [frame(s) for s in self.stored if s > after][:50]
        for m in page:
            del m["type"]
        return connection.respond(HTTPStatus.OK, json.dumps(page))

    async def handle(self, ws: Any) -> None:
        async for raw in ws:
            f = json.loads(raw)
            if f["type"] == "join":
                await ws.send(json.dumps({"type": "joined", "room": f["room"], "history": [],
                                          "epoch": EPOCH, "seq": 0, "ref": f["ref"]}))
                for m in self.live:
                    await ws.send(json.dumps(m))


@unittest.skipIf(_serve is None, "websockets >= 13 is needed to script a node")
class FakeNodeTest(unittest.IsolatedAsyncioTestCase):
    async def run_node(self, live: List[Dict[str, Any]], stored: List[int], count: int) -> "tuple[List[Message], List[str], FakeNode]":
        node = await FakeNode(live, stored).start()
        gaps: List[str] = []
        try:
            async with connect(f"http://127.0.0.1:{node.port}", name="t") as sb:
                sb.on_gap(gaps.append)
                room: Room = await sb.join("r", history=0)
                got = [await asyncio.wait_for(room.__anext__(), 10) for _ in range(count)]
        finally:
            await node.close()
        return got, gaps, node

    async def test_skipped_seqs_are_read_from_the_store(self) -> None:
        got, gaps, node = await self.run_node([frame(1), frame(2), frame(5), frame(6)], [1, 2, 3, 4, 5, 6], 6)
        self.assertEqual([m.seq for m in got], [1, 2, 3, 4, 5, 6])
        self.assertEqual(gaps, [])
        self.assertEqual(len(node.http_requests), 1)

    async def test_skipped_seqs_the_store_lacks_are_a_gap(self) -> None:
        got, gaps, _ = await self.run_node([frame(1), frame(2), frame(5), frame(6)], [1, 2, 5, 6], 4)
        self.assertEqual([m.seq for m in got], [1, 2, 5, 6])
        self.assertEqual(gaps, ["r"])

    async def test_an_epoch_change_while_connected_is_a_gap(self) -> None:
        live = [frame(1), frame(2), frame(1, "e2"), frame(2, "e2"), frame(2, "e2")]
        got, gaps, _ = await self.run_node(live, [], 4)
        self.assertEqual([(m.epoch, m.seq) for m in got], [(EPOCH, 1), (EPOCH, 2), ("e2", 1), ("e2", 2)])
        self.assertEqual(gaps, ["r"])


if __name__ == "__main__":
    unittest.main()
