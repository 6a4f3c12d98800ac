// The whole public API of the switchboard client, typed: `npm test` checks
// this file with `tsc --noEmit --strict -p examples`, so index.d.ts and the
// API stay in step. It also runs (Node 22+, or a browser bundle):
//   connect to a node, join a room, send, read history and presence, leave.

import { Backoff, connect, SwitchboardError } from '..';
import type { Ack, Deleted, Gap, Joined, Message, PresenceChange, PresenceList, Room, State } from '..';

async function token(): Promise<string> {
  // Ask your own backend for a JWT (HS256/RS256/ES256, with `sub` and `exp`).
  const res = await fetch('/my-app/switchboard-token');
  return res.text();
}

export async function main(): Promise<void> {
  const client = connect(['https://chat-1.example.com', 'https://chat-2.example.com'], {
    name: 'alice',
    getToken: token,
    backoffMin: 250,
    backoffMax: 10_000,
    connectTimeout: 10_000,
    outboxMax: 500,
  });

  const stopState = client.on('state', (state: State) => {
    if (state === 'reconnecting') console.log('connection lost, coming back');
  });
  client.on('gap', (gap: Gap) => console.warn(`messages of ${gap.room} were lost; the latest history follows`));
  client.on('error', (error: unknown) => console.error(error));

  let room: Room;
  try {
    room = await client.join('lobby', {
      history: 20,
      presence: true,
      onMessage: (m: Message) => {
        const where = m.seq === undefined ? '' : ` #${m.seq} of ${m.epoch}`;
        console.log(`${m.from}: ${m.text}${where} at ${new Date(m.ts).toISOString()}`);
      },
      onPresence: (change: PresenceChange) => {
        if (change.event === 'count') console.log(`${change.count} in the room`);
        else console.log(`${change.name ?? '?'} ${change.event === 'join' ? 'arrived' : 'left'}`);
      },
    });
  } catch (e) {
    if (e instanceof SwitchboardError && e.code === 'forbidden') {
      console.error('this token does not allow lobby');
      client.close();
      return;
    }
    throw e;
  }
  const state: 'joining' | 'filling' | 'joined' | 'left' = room.state;
  console.log(room.name, state, room.count, room.position?.seq ?? 'no position yet');
  room.on('gap', (gap: Gap) => console.warn('gap in', gap.room));
  room.on('joined', (j: Joined) => console.log(j.rejoined ? `back in ${j.room}` : `in ${j.room}`, j.count));
  // Back online (in a browser: the `online` event): no need to wait out the backoff.
  client.reconnect();
  const stopMessages = room.on('message', (m: Message) => m.id);
  room.on('deleted', (d: Deleted) => console.log('remove', d.id, 'from', d.room));

  try {
    const ack: Ack = await room.send('hello');
    const seq: number | null = ack.seq;
    console.log('durable:', ack.id, seq, ack.epoch);
    await room.send('with my own id', { id: crypto.randomUUID() });
    // A JSON value, in rooms whose policy takes data; live only with `ephemeral`.
    await room.send(null, { data: { move: 'e4', clock: [300, 295] } });
    await room.send('typing', { ephemeral: true });
  } catch (e) {
    if (e instanceof SwitchboardError) {
      switch (e.code) {
        case 'too_large':
          console.error('shorten the message');
          break;
        case 'outbox_full':
        case 'rate_limited':
          console.error('slow down');
          break;
        default:
          console.error(e.code, e.message);
      }
    }
  }

  const older: Message[] = await room.history({ limit: 50 });
  if (older.length > 0) await room.history({ before: older[0].id, limit: 10 });
  const who: PresenceList = await room.presence();
  for (const member of who.members) console.log(member.name, member.connections, member.since);
  if (who.truncated) console.log(`and ${who.count - who.members.length} more`);

  const backoff = new Backoff({ min: 100, max: 5_000, factor: 2, random: Math.random });
  const delay: number = backoff.next();
  console.log(`would wait ${delay} ms; attempt ${backoff.attempt}`);
  backoff.reset();

  stopMessages();
  stopState();
  await room.leave();
  client.close();
  const closed: State = client.state;
  console.log(closed);
}

// The types are not `any`: each of these is an error tsc must report.
export function wrongCalls(room: Room, client: ReturnType<typeof connect>): void {
  // @ts-expect-error text must be a string
  void room.send(42);
  // @ts-expect-error no such event
  client.on('message', () => {});
  // @ts-expect-error an Ack's seq is a number or null, not a string
  room.send('x').then((ack) => ack.seq.toUpperCase());
  // @ts-expect-error history's options are `before` and `limit`
  void room.history({ after: 'x' });
  // @ts-expect-error a url, not a number
  connect(8000);
}
