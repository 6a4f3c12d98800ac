"""Merging history and live messages: duplicates dropped, gaps told."""

from __future__ import annotations

import asyncio
import unittest
from typing import List, Optional

from switchboard_client.auth import token_expiry, token_expired
from switchboard_client.merge import RecentIds, RoomMerge
from switchboard_client.models import Message
from switchboard_client.room import Inbox
from switchboard_client.transport import endpoints, with_query


def msg(id: str, seq: Optional[int] = None, epoch: Optional[str] = "e1") -> Message:
    return Message(id=id, room="r", sender="a", text=id, ts=0, seq=seq, epoch=epoch if seq else None)


def take(merge: RoomMerge, msgs: List[Message]) -> List[str]:
    """What the client hands on of ``msgs``."""
    out = []
    for m in msgs:
        if merge.accepts(m):
            merge.commit(m)
            out.append(m.id)
    return out


def joined(
    merge: RoomMerge,
    epoch: Optional[str],
    seq: Optional[int],
    history: List[Message],
    recovered: Optional[bool] = None,
) -> "tuple[bool, List[str]]":
    gap = merge.begin_joined(epoch, recovered)
    got = take(merge, history)
    merge.end_joined(epoch, seq)
    return gap, got


class MergeTest(unittest.TestCase):
    def test_first_join_is_no_gap(self) -> None:
        m = RoomMerge()
        self.assertIsNone(m.since())
        gap, got = joined(m, "e1", 2, [msg("a", 1), msg("b", 2)])
        self.assertFalse(gap)
        self.assertEqual(got, ["a", "b"])
        self.assertEqual(m.since(), {"seq": 2, "epoch": "e1"})

    def test_live_duplicates_by_seq_are_dropped(self) -> None:
        m = RoomMerge()
        joined(m, "e1", 2, [msg("a", 1), msg("b", 2)])
        # A message at or below the position is a duplicate even with a new id
        # (the same position given twice cannot be two messages).
        self.assertEqual(take(m, [msg("x", 2), msg("c", 3), msg("c2", 3), msg("d", 4)]), ["c", "d"])
        self.assertEqual(m.since(), {"seq": 4, "epoch": "e1"})

    def test_recovered_rejoin_drops_what_was_delivered(self) -> None:
        m = RoomMerge()
        joined(m, "e1", 0, [])
        take(m, [msg("a", 1), msg("b", 2), msg("c", 3)])
        # Rejoin with since {3, e1}; a racing server might repeat 3.
        gap, got = joined(m, "e1", 5, [msg("c", 3), msg("d", 4), msg("e", 5)], recovered=True)
        self.assertFalse(gap)
        self.assertEqual(got, ["d", "e"])
        self.assertEqual(take(m, [msg("e", 5), msg("f", 6)]), ["f"])

    def test_gap_when_not_recovered(self) -> None:
        m = RoomMerge()
        joined(m, "e1", 3, [msg("a", 1), msg("b", 2), msg("c", 3)])
        gap, got = joined(m, "e1", 2000, [msg("c", 3), msg("y", 1999), msg("z", 2000)], recovered=False)
        self.assertTrue(gap)
        # The latest history is the new start, minus ids already delivered.
        self.assertEqual(got, ["y", "z"])
        self.assertEqual(m.since(), {"seq": 2000, "epoch": "e1"})

    def test_gap_when_the_epoch_changes(self) -> None:
        m = RoomMerge()
        joined(m, "e1", 3, [msg("a", 1), msg("b", 2), msg("c", 3)])
        # Even said to be recovered, another epoch cannot continue ours.
        gap, got = joined(m, "e2", 2, [msg("c", 3, "e1"), msg("n1", 1, "e2"), msg("n2", 2, "e2")], recovered=True)
        self.assertTrue(gap)
        self.assertEqual(got, ["n1", "n2"])
        self.assertEqual(m.since(), {"seq": 2, "epoch": "e2"})
        # Seq 1 of the new epoch is below the position now: dropped.
        self.assertEqual(take(m, [msg("n1b", 1, "e2"), msg("n3", 3, "e2")]), ["n3"])

    def test_gap_when_joined_has_no_position(self) -> None:
        m = RoomMerge()
        joined(m, "e1", 1, [msg("a", 1)])
        gap, got = joined(m, None, None, [msg("a", 1), msg("b", 2)], recovered=False)
        self.assertTrue(gap)
        self.assertEqual(got, ["b"])

    def test_live_epoch_change_is_a_gap(self) -> None:
        m = RoomMerge()
        joined(m, "e1", 5, [])
        self.assertFalse(m.live_gap(msg("a", 6, "e1")))
        self.assertTrue(m.live_gap(msg("b", 1, "e2")))
        self.assertEqual(take(m, [msg("b", 1, "e2")]), ["b"])
        self.assertEqual(m.since(), {"seq": 1, "epoch": "e2"})

    def test_messages_without_seq_are_deduplicated_by_id(self) -> None:
        m = RoomMerge()
        joined(m, None, None, [msg("a"), msg("b")])
        self.assertEqual(take(m, [msg("a"), msg("c"), msg("c")]), ["c"])
        self.assertIsNone(m.since())

    def test_ids_out_of_the_window_are_forgotten(self) -> None:
        m = RoomMerge(window=3)
        joined(m, None, None, [])
        self.assertEqual(take(m, [msg("a"), msg("b"), msg("c"), msg("d")]), ["a", "b", "c", "d"])
        # "a" left the window (the last 3 ids are b, c, d): no longer known.
        self.assertEqual(take(m, [msg("b"), msg("d"), msg("a")]), ["a"])
        # Within the window by seq, an old id is still a duplicate.
        m2 = RoomMerge(window=2)
        joined(m2, "e1", 0, [])
        take(m2, [msg("a", 1), msg("b", 2), msg("c", 3)])
        self.assertEqual(take(m2, [msg("a", 1)]), [])

    def test_recent_ids(self) -> None:
        r = RecentIds(2)
        r.add("a")
        r.add("b")
        r.add("a")  # refreshed
        r.add("c")  # evicts b
        self.assertIn("a", r)
        self.assertNotIn("b", r)
        self.assertEqual(len(r), 2)
        with self.assertRaises(ValueError):
            RecentIds(0)


class InboxTest(unittest.IsolatedAsyncioTestCase):
    async def test_bounded_put_waits_for_a_reader(self) -> None:
        box = Inbox(2)
        await box.put(msg("a"))
        await box.put(msg("b"))
        self.assertTrue(box.full())
        blocked = asyncio.ensure_future(box.put(msg("c")))
        await asyncio.sleep(0.01)
        self.assertFalse(blocked.done())
        self.assertEqual((await box.get()).id, "a")
        self.assertTrue(await asyncio.wait_for(blocked, 1))
        self.assertEqual([(await box.get()).id, (await box.get()).id], ["b", "c"])

    async def test_close_ends_after_what_is_queued(self) -> None:
        box = Inbox(5)
        await box.put(msg("a"))
        box.close()
        self.assertFalse(await box.put(msg("b")))
        self.assertEqual((await box.get()).id, "a")
        with self.assertRaises(StopAsyncIteration):
            await box.get()

    async def test_close_with_an_error(self) -> None:
        box = Inbox(1)
        waiter = asyncio.ensure_future(box.get())
        await asyncio.sleep(0)
        box.close(RuntimeError("gone"))
        with self.assertRaises(RuntimeError):
            await waiter


class UrlAndTokenTest(unittest.TestCase):
    def test_endpoints(self) -> None:
        for url in ("http://h:1", "ws://h:1", "ws://h:1/ws", "http://h:1/", "ws://h:1/ws/"):
            self.assertEqual(endpoints(url), ("ws://h:1/ws", "http://h:1"), url)
        self.assertEqual(endpoints("https://x.io/chat"), ("wss://x.io/chat/ws", "https://x.io/chat"))
        self.assertEqual(endpoints("wss://x.io/chat/ws"), ("wss://x.io/chat/ws", "https://x.io/chat"))
        with self.assertRaises(ValueError):
            endpoints("ftp://h")
        self.assertEqual(with_query("ws://h/ws", "a b&c", None), "ws://h/ws?name=a%20b%26c")
        self.assertEqual(with_query("ws://h/ws", None, "t.k"), "ws://h/ws?token=t.k")
        self.assertEqual(with_query("ws://h/ws", None, None), "ws://h/ws")

    def test_token_expiry(self) -> None:
        # {"alg":"HS256"} . {"sub":"u","exp":1000} . signature (not checked)
        token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1IiwiZXhwIjoxMDAwfQ.c2ln"
        self.assertEqual(token_expiry(token), 1000.0)
        self.assertTrue(token_expired(token, 1000.0))
        self.assertFalse(token_expired(token, 999.0))
        self.assertIsNone(token_expiry("not a token"))
        self.assertIsNone(token_expiry("a.!!!.c"))
        self.assertFalse(token_expired("a.b.c", 1e12))


if __name__ == "__main__":
    unittest.main()
