"""The outbox: bounded, settles each send once, resends in order."""

from __future__ import annotations

import asyncio
import unittest

from switchboard_client.errors import SwitchboardError
from switchboard_client.models import Ack
from switchboard_client.outbox import Outbox


class OutboxTest(unittest.IsolatedAsyncioTestCase):
    def future(self) -> "asyncio.Future[Ack]":
        return asyncio.get_running_loop().create_future()

    async def test_bounded(self) -> None:
        box = Outbox(3)
        for i in range(3):
            box.add(f"id{i}", "r", "t", self.future())
        with self.assertRaises(SwitchboardError) as caught:
            box.add("id3", "r", "t", self.future())
        self.assertEqual(caught.exception.code, "outbox_full")
        self.assertEqual(len(box), 3)
        # Settling one makes room for one.
        box.resolve("id0", Ack("id0", 1, "e"))
        box.add("id3", "r", "t", self.future())
        self.assertEqual(len(box), 3)

    async def test_duplicate_id_refused(self) -> None:
        box = Outbox(3)
        box.add("a", "r", "t", self.future())
        with self.assertRaises(SwitchboardError) as caught:
            box.add("a", "r", "t", self.future())
        self.assertEqual(caught.exception.code, "duplicate_id")

    async def test_reject_room_spares_what_is_on_the_wire(self) -> None:
        box = Outbox(10)
        futures = {id: self.future() for id in ("a", "b", "c")}
        box.add("a", "r1", "t", futures["a"])
        box.add("b", "r1", "t", futures["b"])
        box.add("c", "r2", "t", futures["c"])
        box.mark_sent(box.get("a"), 1)  # type: ignore[arg-type]
        self.assertEqual(box.reject_room("r1", SwitchboardError("not_joined")), 1)
        self.assertEqual([e.id for e in box], ["a", "c"])
        with self.assertRaises(SwitchboardError):
            await futures["b"]

    async def test_settles_exactly_once(self) -> None:
        box = Outbox(10)
        fa, fb = self.future(), self.future()
        box.add("a", "r", "t", fa)
        box.add("b", "r", "t", fb)
        self.assertTrue(box.resolve("a", Ack("a", 5, "e")))
        self.assertFalse(box.resolve("a", Ack("a", 6, "e")))
        self.assertFalse(box.reject("a", SwitchboardError("closed")))
        self.assertEqual(await fa, Ack("a", 5, "e"))
        self.assertTrue(box.reject("b", SwitchboardError("too_large", "big")))
        self.assertFalse(box.resolve("b", Ack("b")))
        with self.assertRaises(SwitchboardError) as caught:
            await fb
        self.assertEqual(caught.exception.code, "too_large")
        self.assertEqual(len(box), 0)

    async def test_unknown_ids(self) -> None:
        box = Outbox(1)
        self.assertFalse(box.resolve("nope", Ack("nope")))
        self.assertIsNone(box.get("nope"))

    async def test_resend_order_after_a_reconnect(self) -> None:
        box = Outbox(10)
        for id in "abcde":
            box.add(id, "r", id, self.future())
        for ref, entry in enumerate(box.waiting(0.0), start=1):
            box.mark_sent(entry, ref)
        self.assertEqual(box.inflight_count(), 5)
        self.assertEqual(box.waiting(0.0), [])
        self.assertIs(box.by_ref(3), box.get("c"))
        box.resolve("b", Ack("b"))
        self.assertIsNone(box.by_ref(2))
        box.requeue_all()  # the connection ended
        self.assertEqual(box.inflight_count(), 0)
        self.assertEqual([e.id for e in box.waiting(0.0)], ["a", "c", "d", "e"])
        self.assertIsNone(box.by_ref(1))

    async def test_retry_delay(self) -> None:
        box = Outbox(10)
        a = box.add("a", "r", "t", self.future())
        box.add("b", "r", "t", self.future())
        a.not_before = 5.0
        self.assertEqual([e.id for e in box.waiting(1.0)], ["b"])
        self.assertEqual(box.next_due(1.0), 5.0)
        self.assertIsNone(box.next_due(5.0))
        self.assertEqual([e.id for e in box.waiting(5.0)], ["a", "b"])

    async def test_reject_all(self) -> None:
        box = Outbox(10)
        futures = [self.future() for _ in range(4)]
        for i, f in enumerate(futures):
            box.add(str(i), "r", "t", f)
        box.mark_sent(box.get("1"), 9)  # type: ignore[arg-type]
        self.assertEqual(box.reject_all(SwitchboardError("closed", "bye")), 4)
        self.assertEqual(len(box), 0)
        for f in futures:
            with self.assertRaises(SwitchboardError) as caught:
                await f
            self.assertEqual(caught.exception.code, "closed")
        self.assertEqual(box.reject_all(SwitchboardError("closed")), 0)

    async def test_cancelled_waiter_does_not_break_settling(self) -> None:
        box = Outbox(2)
        f = self.future()
        box.add("a", "r", "t", f)
        f.cancel()
        self.assertTrue(box.resolve("a", Ack("a")))
        self.assertEqual(len(box), 0)


if __name__ == "__main__":
    unittest.main()
