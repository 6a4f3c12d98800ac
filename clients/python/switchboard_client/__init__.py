"""switchboard-client: the Python client of switchboard's ``/ws`` protocol.

    async with connect("http://127.0.0.1:8000", name="bot") as sb:
        room = await sb.join("lobby")
        async for msg in room:
            if msg.text == "ping":
                await room.send("pong")
"""

from .backoff import Backoff, backoff_delay
from .client import STATES, Client, connect
from .errors import SwitchboardError
from .models import Ack, Joined, Member, Message, Position, Presence, PresenceChange
from .room import Room

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Backoff",
    "Client",
    "Joined",
    "Member",
    "Message",
    "Position",
    "Presence",
    "PresenceChange",
    "Room",
    "STATES",
    "SwitchboardError",
    "backoff_delay",
    "connect",
    "__version__",
]
