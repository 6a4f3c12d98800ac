"""Against one real node: refusals, tokens, the outbox bound, gaps, presence,
history and the example bot."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import unittest
import urllib.request
import uuid
from typing import Callable, List, Optional

from switchboard_client import Ack, Joined, Position, PresenceChange, SwitchboardError, connect

from support import MISSING_BINARY, REPO, Node, binary, jwt_hs256, tail, temp_dir, unique

SECRET = "a-test-secret-of-at-least-32-bytes!!"


class ServerTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        if binary() is None:
            self.skipTest(MISSING_BINARY)
        self.workdir = temp_dir()
        self.nodes: List[Node] = []

    async def asyncTearDown(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def node(self, **env: str) -> Node:
        node = Node(unique("n"), env, self.workdir)
        self.nodes.append(node)
        await node.start()
        return node

    async def test_too_large_is_refused_with_its_code(self) -> None:
        node = await self.node()
        async with connect(node.url, name="big") as sb:
            room = await sb.join(unique("big"))
            with self.assertRaises(SwitchboardError) as caught:
                await room.send("x" * 4097)
            self.assertEqual(caught.exception.code, "too_large")
            # 4096 bytes as escaped JSON: `"` counts 2.
            with self.assertRaises(SwitchboardError) as caught:
                await room.send('"' * 2049)
            self.assertEqual(caught.exception.code, "too_large")
            ack = await room.send("x" * 4096)
            self.assertIsInstance(ack, Ack)
            self.assertEqual(ack.seq, 1)
            msg = await asyncio.wait_for(room.__anext__(), 10)
            self.assertEqual((msg.id, msg.seq, msg.epoch), (ack.id, ack.seq, ack.epoch))
            self.assertEqual(msg.sender, "big")
            with self.assertRaises(SwitchboardError) as caught:
                await sb.join("not a room name!")
            self.assertEqual(caught.exception.code, "bad_room")
            self.assertNotIn("not a room name!", sb.rooms)
            with self.assertRaises(SwitchboardError) as caught:
                await sb.join(room.name)
            self.assertEqual(caught.exception.code, "already_joined")
            same = str(uuid.uuid4())
            waiting = asyncio.ensure_future(room.send("x", id=same))
            await asyncio.sleep(0)  # in the outbox now
            with self.assertRaises(SwitchboardError) as caught:
                await room.send("y", id=same)
            self.assertEqual(caught.exception.code, "duplicate_id")
            self.assertEqual((await waiting).id, same)

    async def test_data_ephemeral_deletions_and_a_disconnect(self) -> None:
        key = "python-client-api-key-0123456789"
        node = await self.node(CONFIG_FILE=str(REPO / "deploy" / "switchboard.toml"), API_KEY=key)

        def call(method: str, path: str) -> int:
            request = urllib.request.Request(
                node.url + path, method=method, headers={"Authorization": f"Bearer {key}"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                status: int = response.status
                return status

        errors: List[BaseException] = []
        async with connect(node.url, name="py-mod") as sb:
            sb.on_error(errors.append)
            typing = await sb.join(unique("typing:t"))
            ack = await typing.send(data={"typing": True, "at": [1, 2]})
            self.assertIsNone(ack.seq, "typing stores nothing: no position")
            live = await asyncio.wait_for(typing.__anext__(), 10)
            self.assertEqual((live.text, live.data), ("", {"typing": True, "at": [1, 2]}))
            ack = await typing.send("both", data=[None], ephemeral=True)
            self.assertEqual((await asyncio.wait_for(typing.__anext__(), 10)).data, [None])

            chat = await sb.join(unique("chat"))
            with self.assertRaises(SwitchboardError) as caught:
                await chat.send(data=1)
            self.assertEqual(caught.exception.code, "forbidden", "this room takes text only")
            with self.assertRaises(SwitchboardError) as caught:
                await chat.send()
            self.assertEqual(caught.exception.code, "bad_frame")
            said = await chat.send("regrettable")
            self.assertEqual((await asyncio.wait_for(chat.__anext__(), 10)).text, "regrettable")
            status = await asyncio.to_thread(call, "DELETE", f"/api/rooms/{chat.name}/messages/{said.id}")
            self.assertEqual(status, 204)
            gone = await asyncio.wait_for(chat.__anext__(), 10)
            self.assertEqual((gone.id, gone.deleted), (said.id, True))

            status = await asyncio.to_thread(call, "POST", "/api/users/py-mod/disconnect")
            self.assertEqual(status, 202)
            deadline = time.monotonic() + 10
            while sb.state != "closed" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.assertEqual(sb.state, "closed", "a disconnect by the server is not undone by reconnecting")
            self.assertIn("disconnected", [getattr(e, "code", None) for e in errors])

    async def test_get_token_is_asked_again_after_a_refusal(self) -> None:
        node = await self.node(AUTH="required", JWT_SECRET=SECRET)
        calls: List[float] = []

        async def get_token() -> str:
            calls.append(time.time())
            now = int(time.time())
            if len(calls) == 1:  # expired an hour ago: past the server's 30 s leeway
                return jwt_hs256(SECRET, {"sub": "u1", "name": "Tokened", "exp": now - 3600})
            return jwt_hs256(SECRET, {"sub": "u1", "name": "Tokened", "exp": now + 600})

        async with connect(node.url, name="ignored", get_token=get_token, backoff_min=0.05) as sb:
            self.assertEqual(len(calls), 2)
            room = await sb.join(unique("auth"))
            ack = await room.send("signed")
            msg = await asyncio.wait_for(room.__anext__(), 10)
            self.assertEqual((msg.id, msg.sender), (ack.id, "Tokened"))
            # The HTTP history API with the same token.
            history = await room.history()
            self.assertEqual([m.id for m in history], [ack.id])

    async def test_a_token_about_to_expire_is_refreshed_in_place(self) -> None:
        node = await self.node(
            AUTH="required", JWT_SECRET=SECRET, JWT_LEEWAY_SECS="0", TOKEN_WARNING_MS="1500"
        )
        calls: List[float] = []
        exps: List[int] = []

        async def get_token() -> str:
            calls.append(time.time())
            # Each a little later than the last (`exp` counts whole seconds).
            exps.append(max(int(time.time()) + 3, exps[-1] + 1 if exps else 0))
            return jwt_hs256(SECRET, {"sub": "u1", "exp": exps[-1]})

        states: List[str] = []
        async with connect(node.url, get_token=get_token) as sb:
            sb.on_state(states.append)
            room = await sb.join(unique("refresh"))
            # Past two of the tokens' lifetimes: warned and refreshed each time.
            await asyncio.sleep(5)
            self.assertGreaterEqual(len(calls), 3, calls)
            self.assertEqual(states, [], "the connection never dropped")
            ack = await room.send("still here")
            self.assertIsNotNone(ack.seq)

    async def test_a_refused_static_token_fails_the_connect(self) -> None:
        node = await self.node(AUTH="required", JWT_SECRET=SECRET)
        bad = jwt_hs256("another-secret-of-at-least-32-bytes", {"sub": "u", "exp": int(time.time()) + 60})
        with self.assertRaises(SwitchboardError) as caught:
            async with connect(node.url, token=bad):
                pass
        self.assertEqual((caught.exception.code, caught.exception.status), ("unauthorized", 401))

    async def test_outbox_bound_and_closed_sends(self) -> None:
        node = await self.node()
        sb = connect(node.url, name="offline", outbox_max=3, backoff_min=0.05, backoff_max=0.2)
        states: List[str] = []
        sb.on_state(states.append)
        await sb.open()
        room = await sb.join(unique("outbox"))
        node.kill()
        while sb.state != "reconnecting":
            await asyncio.sleep(0.01)
        pending = [asyncio.ensure_future(room.send(f"queued {i}")) for i in range(3)]
        await asyncio.sleep(0.05)
        with self.assertRaises(SwitchboardError) as caught:
            await room.send("one too many")
        self.assertEqual(caught.exception.code, "outbox_full")
        await sb.close()
        for task in pending:
            with self.assertRaises(SwitchboardError) as caught:
                await task
            self.assertEqual(caught.exception.code, "closed")
        self.assertEqual(states[0], "open")
        self.assertEqual(states[-1], "closed")
        self.assertIn("reconnecting", states)
        # The iteration ends once the client is closed.
        self.assertEqual([m async for m in room], [])

    async def test_unacked_sends_survive_a_restart_and_a_new_epoch_is_a_gap(self) -> None:
        node = await self.node(DATABASE_URL=f"sqlite://{self.workdir}/single.sqlite")
        gaps: List[str] = []
        joins: List[Joined] = []
        async with connect(node.url, name="survivor", backoff_min=0.05, backoff_max=0.5) as sb:
            sb.on_gap(gaps.append)
            room = await sb.join(unique("restart"))
            room.on_joined(joins.append)
            first = await room.send("before")
            self.assertEqual(room.position, Position(str(first.epoch), 1))
            node.kill()  # a crash: the restarted node starts a new epoch
            while sb.state == "open":
                await asyncio.sleep(0.01)
            queued = asyncio.ensure_future(room.send("while down"))
            await asyncio.sleep(0.3)
            self.assertFalse(queued.done())
            await node.start()
            second = await asyncio.wait_for(queued, 30)
            msgs = [await asyncio.wait_for(room.__anext__(), 10) for _ in range(2)]
            self.assertEqual([m.id for m in msgs], [first.id, second.id])
            self.assertEqual(gaps, [room.name])
            self.assertNotEqual(first.epoch, second.epoch)
            self.assertEqual(room.position, Position(str(second.epoch), int(second.seq or 0)))
            self.assertEqual(joins, [Joined(room.name, 1, True)])

    async def test_reconnect_skips_the_backoff(self) -> None:
        node = await self.node()
        async with connect(node.url, name="impatient", backoff_min=10.0, backoff_max=10.0) as sb:
            room = await sb.join(unique("now"))
            node.kill()
            while sb.state != "reconnecting":
                await asyncio.sleep(0.01)
            await node.start()
            sb.reconnect()
            started = time.monotonic()
            await self.until(lambda: sb.state == "open", timeout=4.0)
            self.assertLess(time.monotonic() - started, 4.0)
            # Asked right after the reconnect: answered after the rejoin.
            who = await asyncio.wait_for(room.presence(), 5)
            self.assertEqual([m.name for m in who.members], ["impatient"])

    async def test_rate_limited_sends_are_paced_and_retried(self) -> None:
        node = await self.node(RATE_LIMIT_PER_SEC="10", RATE_LIMIT_BURST="10")
        states: List[str] = []
        async with connect(node.url, name="eager", send_tries=10) as sb:
            sb.on_state(states.append)
            room = await sb.join(unique("paced"))
            started = time.monotonic()
            acks = await asyncio.wait_for(asyncio.gather(*(room.send(f"n{i}") for i in range(40))), 60)
            took = time.monotonic() - started
            # 10 at once, then 10 a second: the rest waited for the limit.
            self.assertGreater(took, 2.0)
            self.assertEqual(sorted(a.seq or 0 for a in acks), list(range(1, 41)))
            # Never past the server's frame limit (ten times the rate): no
            # connection was closed for it.
            self.assertEqual(states, [])

    async def test_presence(self) -> None:
        node = await self.node()
        name = unique("presence")
        changes: List[PresenceChange] = []
        async with connect(node.url, name="watcher") as watcher:
            room = await watcher.join(name, presence=True)
            room.on_presence(changes.append)
            async with connect(node.url, name="visitor") as visitor:
                await visitor.join(name)
                who = await room.presence()
                self.assertEqual(who.count, 2)
                self.assertEqual(sorted(m.name for m in who.members), ["visitor", "watcher"])
                over_http = await watcher.presence(name)
                self.assertEqual(over_http.count, 2)
                await self.until(lambda: any(c.event == "join" and c.name == "visitor" for c in changes))
            await self.until(lambda: any(c.event == "leave" and c.name == "visitor" for c in changes))
            await room.leave()
            self.assertEqual([m async for m in room], [])
            with self.assertRaises(SwitchboardError) as caught:
                await room.send("after leaving")
            self.assertEqual(caught.exception.code, "not_joined")

    async def until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            await asyncio.sleep(0.02)
        self.fail("condition not met in time")

    async def test_example_bot_answers_ping(self) -> None:
        node = await self.node()
        room_name = unique("bot")
        env = {**os.environ, "SWITCHBOARD_URL": node.url, "SWITCHBOARD_ROOM": room_name}
        bot = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "clients" / "python" / "examples" / "bot.py"),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        answer: Optional[str] = None
        try:
            async with connect(node.url, name="human") as sb:
                room = await sb.join(room_name)
                deadline = time.monotonic() + 30
                # The bot may not be in the room yet: ask until it answers.
                while answer is None and time.monotonic() < deadline and bot.returncode is None:
                    await room.send("ping")
                    try:
                        while True:
                            msg = await asyncio.wait_for(room.__anext__(), 1)
                            if msg.sender == "pingbot":
                                answer = msg.text
                                break
                    except asyncio.TimeoutError:
                        pass
        finally:
            if bot.returncode is None:
                bot.terminate()
            out, _ = await bot.communicate()
        self.assertEqual(answer, "pong", f"the bot said:\n{tail(out.decode())}")
        self.assertEqual(bot.returncode, 0, tail(out.decode()))

if __name__ == "__main__":
    unittest.main()
