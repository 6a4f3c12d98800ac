"""Against a real two-node cluster: nodes killed and connections cut while
2,000 messages stream; every send is acked once, every member gets every
message once, in order."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import unittest
import uuid
from typing import Any, Dict, List

from switchboard_client import Ack, Message, Room, connect

from support import MISSING_BINARY, Node, Proxy, binary, redis_reachable, redis_url, tail, temp_dir, unique

MESSAGES = 2000
INTERVAL = 0.005  # one send started every 5 ms
KILL_AT = (500, 1200)  # node A is killed when this many sends were started
CUT_RECEIVER_AT = 800  # the receiver's connection (to B, through a proxy) is cut
# The sender reached B through a proxy after the first kill; cutting it sends
# the sender back to A (the next URL), so the second kill hits it too.
CUT_SENDER_AT = 950
RESTART_AFTER = 1.0
FINISH_WITHIN = 60.0


class ClusterTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        # The client's own account of what happened, shown when the test fails.
        self.events: List[str] = []
        self.t0 = time.monotonic()
        self.handler = _Collect(self.events, self.t0)
        client_log = logging.getLogger("switchboard_client")
        client_log.addHandler(self.handler)
        client_log.setLevel(logging.INFO)
        client_log.propagate = False
        if binary() is None:
            self.skipTest(MISSING_BINARY)
        problem = redis_reachable(redis_url())
        if problem is not None:
            self.fail(f"the cluster test needs Redis ({problem}); set SWITCHBOARD_TEST_REDIS")
        self.workdir = temp_dir()
        self.nodes: List[Node] = []
        self.proxies: List[Proxy] = []
        env = {
            "REDIS_URL": redis_url(),
            "REDIS_PREFIX": unique("pyc"),
            "DATABASE_URL": f"sqlite://{self.workdir}/db.sqlite",
            "RECOVERY_WINDOW": "5000",
            "RATE_LIMIT_PER_SEC": "1000",
            "RATE_LIMIT_BURST": "1000",
            # The test's keys leave Redis by themselves within the hour.
            "RECOVERY_TTL": "3600",
        }
        for label in ("a", "b"):
            node = Node(label, {**env, "NODE_ID": unique(f"pyc-{label}")}, self.workdir)
            self.nodes.append(node)
            await node.start()  # one after the other: the first creates the store

    async def asyncTearDown(self) -> None:
        client_log = logging.getLogger("switchboard_client")
        client_log.removeHandler(self.handler)
        client_log.propagate = True
        for proxy in self.proxies:
            await proxy.close()
        for node in self.nodes:
            node.kill()
        if getattr(self, "workdir", None):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self.t0:8.3f} test: {what}")

    def diagnostics(self) -> str:
        nodes = "\n".join(f"== node {n.label} (port {n.port}) ==\n{tail(n.logs())}" for n in self.nodes)
        return "\n== timeline ==\n" + "\n".join(self.events) + "\n" + nodes

    async def kill_and_restart(self, node: Node) -> None:
        self.note(f"kill node {node.label}")
        await asyncio.to_thread(node.kill)
        await asyncio.sleep(RESTART_AFTER)
        await node.start()
        self.note(f"node {node.label} restarted")

    async def test_kills_and_cuts_lose_and_duplicate_nothing(self) -> None:
        a, b = self.nodes
        room_name = unique("cluster")
        to_b_receiver = await Proxy(b.port).start()
        to_b_sender = await Proxy(b.port).start()
        self.proxies += [to_b_receiver, to_b_sender]
        states: List[str] = []
        gaps: List[str] = []
        options: Dict[str, Any] = {"backoff_min": 0.1, "backoff_max": 2.0, "stable_after": 5.0}
        receiver = connect(to_b_receiver.url, name="receiver", **options)
        receiver_states: List[str] = []
        receiver.on_state(receiver_states.append)
        sender = connect([a.url, to_b_sender.url], name="sender", **options)
        sender.on_state(states.append)
        sender.on_state(lambda s: self.note(f"sender state {s}"))
        receiver.on_state(lambda s: self.note(f"receiver state {s}"))
        for client in (receiver, sender):
            client.on_gap(gaps.append)
        async with receiver, sender:
            rroom = await receiver.join(room_name, history=0)
            sroom = await sender.join(room_name, history=0)
            got: Dict[str, List[Message]] = {"receiver": [], "sender": []}

            async def consume(room: Room, into: List[Message]) -> None:
                async for msg in room:
                    into.append(msg)

            readers = [
                asyncio.ensure_future(consume(rroom, got["receiver"])),
                asyncio.ensure_future(consume(sroom, got["sender"])),
            ]
            ids = [str(uuid.uuid4()) for _ in range(MESSAGES)]
            sends: List["asyncio.Future[Ack]"] = []
            faults: List["asyncio.Future[None]"] = []
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(MESSAGES):
                # Always yield, even when behind schedule: the clients run too.
                await asyncio.sleep(max(0.0, start + i * INTERVAL - loop.time()))
                sends.append(asyncio.ensure_future(sroom.send(f"m{i}", id=ids[i])))
                if i + 1 in KILL_AT:
                    faults.append(asyncio.ensure_future(self.kill_and_restart(a)))
                if i + 1 == CUT_RECEIVER_AT:
                    self.note("cut the receiver")
                    self.assertEqual(to_b_receiver.cut(), 1)
                if i + 1 == CUT_SENDER_AT:
                    self.note(f"cut the sender: {to_b_sender.cut()} connection(s)")
            stream_took = loop.time() - start

            results = await asyncio.wait_for(
                asyncio.gather(*sends, return_exceptions=True), FINISH_WITHIN
            )
            settled_after = loop.time() - start
            await asyncio.wait_for(asyncio.gather(*faults), FINISH_WITHIN)
            deadline = loop.time() + FINISH_WITHIN
            while loop.time() < deadline and any(len(v) < MESSAGES for v in got.values()):
                await asyncio.sleep(0.1)
            for task in readers:
                task.cancel()

        # Every send settled once, with an ack.
        failures = [(ids[i], r) for i, r in enumerate(results) if not isinstance(r, Ack)]
        self.note(f"receiver got {len(got['receiver'])}, sender got {len(got['sender'])}")
        self.assertEqual(failures[:5], [], f"{len(failures)} sends failed\n{self.diagnostics()}")
        self.assertEqual([r.id for r in results if isinstance(r, Ack)], ids)
        # The faults happened as planned.
        self.assertEqual(a.starts, 3)
        self.assertGreaterEqual(states.count("reconnecting"), 3, states)
        self.assertGreaterEqual(receiver_states.count("reconnecting"), 1, receiver_states)
        self.assertEqual(gaps, [])
        acked = {r.id: r for r in results if isinstance(r, Ack)}
        for who, msgs in got.items():
            with self.subTest(who=who):
                seen = [m.id for m in msgs]
                self.assertEqual(len(seen), len(set(seen)), f"{who} got repeats")
                missing = set(ids) - set(seen)
                if missing:
                    seq_by_id = {r.id: r.seq for r in acked.values()}
                    lost = sorted(seq_by_id[i] or 0 for i in missing)
                    self.fail(f"{who} is missing {len(missing)} messages, seqs {lost}{self.diagnostics()}")
                self.assertEqual(set(seen), set(ids))
                epochs = {m.epoch for m in msgs}
                self.assertEqual(len(epochs), 1, f"{who} saw epochs {epochs}")
                seqs = [m.seq for m in msgs]
                self.assertTrue(all(s is not None for s in seqs))
                self.assertTrue(
                    all(x < y for x, y in zip(seqs, seqs[1:])),  # type: ignore[operator]
                    f"{who}: seqs not strictly increasing",
                )
                for m in msgs:
                    ack = acked[m.id]
                    if ack.seq is not None:
                        self.assertEqual((ack.seq, ack.epoch), (m.seq, m.epoch))
        print(
            f"\n  cluster: {MESSAGES} sends started in {stream_took:.1f} s, all acked after "
            f"{settled_after:.1f} s; node A started {a.starts} times; reconnects: sender "
            f"{states.count('reconnecting')}, receiver {receiver_states.count('reconnecting')}; "
            f"seqs {got['receiver'][0].seq}..{got['receiver'][-1].seq}",
            flush=True,
        )


class _Collect(logging.Handler):
    def __init__(self, into: List[str], t0: float) -> None:
        super().__init__(logging.INFO)
        self.into = into
        self.t0 = t0

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(f"{time.monotonic() - self.t0:8.3f} client: {record.getMessage()}")


if __name__ == "__main__":
    unittest.main()
