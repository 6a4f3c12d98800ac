"""Against one real node: recovery cut to fit a frame, and backpressure."""

from __future__ import annotations

import asyncio
import shutil
import time
import unittest
from typing import List

from switchboard_client import Ack, Message, Room, connect

from support import MISSING_BINARY, Node, Proxy, binary, temp_dir, unique


SLOW_MESSAGES = 3000


def seq_of(ack: Ack) -> int:
    assert ack.seq is not None
    return ack.seq


class RecoveryTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        if binary() is None:
            self.skipTest(MISSING_BINARY)
        self.workdir = temp_dir()
        self.nodes: List[Node] = []
        self.proxies: List[Proxy] = []

    async def asyncTearDown(self) -> None:
        for proxy in self.proxies:
            await proxy.close()
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def node(self, **env: str) -> Node:
        node = Node(unique("n"), env, self.workdir)
        self.nodes.append(node)
        await node.start()
        return node

    async def read(self, room: Room, count: int, timeout: float = 30.0) -> List[Message]:
        got: List[Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f"got {len(got)} of {count} messages")
            got.append(await asyncio.wait_for(room.__anext__(), left))
        return got

    async def test_a_truncated_recovery_is_completed_over_http(self) -> None:
        node = await self.node(RATE_LIMIT_PER_SEC="1000", RATE_LIMIT_BURST="1000")
        proxy = await Proxy(node.port).start()
        self.proxies.append(proxy)
        name = unique("bulky")
        gaps: List[str] = []
        async with connect(proxy.url, name="reader", backoff_min=0.05, backoff_max=0.2) as reader, \
                connect(node.url, name="writer") as writer:
            reader.on_gap(gaps.append)
            rroom = await reader.join(name, history=0)
            wroom = await writer.join(name, history=0)
            first = await wroom.send("first")
            self.assertEqual((await self.read(rroom, 1))[0].id, first.id)
            proxy.refusing = True
            proxy.cut()
            while reader.state == "open":
                await asyncio.sleep(0.01)
            # 160 messages of 4,000 bytes: more than one joined frame carries
            # (512 KiB), so the recovery comes cut and the rest over HTTP.
            acks = await asyncio.gather(*(wroom.send(f"{i:04d}" + "x" * 3996) for i in range(160)))
            proxy.refusing = False
            got = await self.read(rroom, 160)
            # Concurrent sends may be stored in another order than made (a
            # rate_limited one is retried later): compare in seq order.
            self.assertEqual([m.id for m in got], [a.id for a in sorted(acks, key=seq_of)])
            self.assertEqual([m.seq for m in got], list(range(2, 162)))
            self.assertEqual(gaps, [])
            self.assertEqual(rroom.queued, 0)

    async def test_a_slow_reader_is_cut_off_and_catches_up(self) -> None:
        # The server queues 64 frames for a client; the client 20 per room.
        node = await self.node(
            CLIENT_QUEUE_FRAMES="64",
            RATE_LIMIT_PER_SEC="1000",
            RATE_LIMIT_BURST="1000",
            # What the slow reader misses is recovered (the default is 1,000).
            RECOVERY_MAX="100000",
        )
        name = unique("slow")
        states: List[str] = []
        async with connect(node.url, name="slow", queue_max=20, backoff_min=0.05) as slow, \
                connect(node.url, name="fast", outbox_max=SLOW_MESSAGES) as fast:
            slow.on_state(states.append)
            sroom = await slow.join(name, history=0)
            froom = await fast.join(name, history=0)
            # Enough bytes that the socket buffers between the node and the
            # slow reader fill while it does not read.
            acks = await asyncio.gather(*(froom.send(f"{i:04d}" + "y" * 3900) for i in range(SLOW_MESSAGES)))
            await asyncio.sleep(1.0)  # the server gives up on the slow reader meanwhile
            got = await self.read(sroom, SLOW_MESSAGES, timeout=60)
            self.assertEqual([m.id for m in got], [a.id for a in sorted(acks, key=seq_of)])
            self.assertEqual([m.seq for m in got], list(range(1, SLOW_MESSAGES + 1)))
            self.assertIn("reconnecting", states)


if __name__ == "__main__":
    unittest.main()
