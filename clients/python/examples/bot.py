"""A bot that answers "pong" to every "ping" in a room.

    SWITCHBOARD_URL=http://127.0.0.1:8000 SWITCHBOARD_ROOM=lobby python examples/bot.py

It reconnects by itself when the node goes away, and stops on Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from switchboard_client import SwitchboardError, connect

NAME = "pingbot"


async def main() -> None:
    url = os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8000")
    room_name = os.environ.get("SWITCHBOARD_ROOM", "lobby")
    token = os.environ.get("SWITCHBOARD_TOKEN")  # with AUTH=required
    async with connect(url, name=NAME, token=token) as sb:
        sb.on_state(lambda state: logging.info("connection: %s", state))
        sb.on_gap(lambda room: logging.warning("%s: some messages may have been missed", room))
        # history=0: answer what is said from now on, not old pings.
        room = await sb.join(room_name, history=0)
        logging.info("in %s as %s", room_name, NAME)
        async for msg in room:
            if msg.sender == NAME or msg.text.strip().lower() != "ping":
                continue
            try:
                ack = await room.send("pong")
                logging.info("answered %s (seq %s)", msg.sender, ack.seq)
            except SwitchboardError as exc:
                logging.warning("could not answer: %s", exc)


def run() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    loop = asyncio.new_event_loop()
    task = loop.create_task(main())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()


if __name__ == "__main__":
    run()
