// One room's delivered stream: duplicates by seq and by id dropped, recovery
// and live delivery merged to each message once in order, gaps told.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Merge } from '../switchboard.js';

const E = 'epoch-1';
const msg = (seq, epoch = E, id = `${epoch}-${seq}`) => ({ id, room: 'r', from: 'x', text: `m${seq}`, ts: seq, seq, epoch });
const range = (from, to, epoch = E) => Array.from({ length: to - from + 1 }, (_, i) => msg(from + i, epoch));
const seqs = (ms) => ms.map((m) => m.seq);

test('a first join delivers its history and takes the room\'s position', () => {
  const m = new Merge();
  const { messages, gap } = m.joined({ history: range(1, 3), epoch: E, seq: 3 }, false);
  assert.deepEqual(seqs(messages), [1, 2, 3]);
  assert.equal(gap, false);
  assert.deepEqual(m.since(), { epoch: E, seq: 3 });
  // A live message at or before the join position was in the history.
  assert.equal(m.accept(msg(3)), false);
  assert.equal(m.accept(msg(4)), true);
});

test('a first join without history still sets the position live messages follow', () => {
  const m = new Merge();
  assert.deepEqual(m.joined({ history: [], epoch: E, seq: 41 }, false), { messages: [], gap: false });
  assert.equal(m.accept({ ...msg(41), id: 'new-id' }), false, 'seq 41 was before the join');
  assert.equal(m.accept(msg(42)), true);
});

test('duplicates are dropped by seq and by id', () => {
  const m = new Merge();
  m.joined({ history: [], epoch: E, seq: 0 }, false);
  assert.equal(m.accept(msg(1)), true);
  assert.equal(m.accept(msg(2)), true);
  assert.equal(m.accept(msg(2)), false, 'same message again');
  assert.equal(m.accept({ ...msg(2), id: 'other-id' }), false, 'same seq, other id');
  assert.equal(m.accept({ ...msg(1), id: 'other-id-2' }), false, 'an older seq');
  assert.equal(m.accept({ ...msg(9), id: msg(1).id }), false, 'a seen id at a new seq');
  assert.equal(m.accept({ id: msg(2).id, room: 'r', text: 'no position' }), false, 'a seen id without a position');
  assert.equal(m.accept({ id: 'fresh', room: 'r', text: 'no position' }), true, 'a new id without a position');
  assert.deepEqual(m.since(), { epoch: E, seq: 2 }, 'a message without a position does not move it');
  assert.equal(m.accept({ text: 'no id' }), false);
});

test('recovered history and overlapping live messages merge to each once, in order', () => {
  const m = new Merge();
  const delivered = [];
  const take = (ms) => { for (const x of ms) delivered.push(x.seq); };
  take(m.joined({ history: range(1, 5), epoch: E, seq: 5 }, false).messages);
  for (const x of range(6, 8)) if (m.accept(x)) delivered.push(x.seq);
  // The connection drops; live 9 and 10 were sent but never arrived.
  const since = m.since();
  assert.deepEqual(since, { epoch: E, seq: 8 });
  const answer = { history: range(9, 12), epoch: E, seq: 12, recovered: true };
  const { messages, gap } = m.joined(answer, true);
  assert.equal(gap, false);
  take(messages);
  // Live messages racing the recovery: some already in history, then new ones.
  for (const x of [...range(10, 12), ...range(11, 15), msg(15)]) if (m.accept(x)) delivered.push(x.seq);
  assert.deepEqual(delivered, range(1, 15).map((x) => x.seq));
  assert.deepEqual(m.since(), { epoch: E, seq: 15 });
});

test('a recovered rejoin whose history overlaps what was delivered delivers only the new', () => {
  const m = new Merge();
  m.joined({ history: range(1, 4), epoch: E, seq: 4 }, false);
  const { messages, gap } = m.joined({ history: range(3, 6), epoch: E, seq: 6, recovered: true }, true);
  assert.equal(gap, false);
  assert.deepEqual(seqs(messages), [5, 6]);
});

test('recovered:false is a gap: the latest history without the ids already seen', () => {
  const m = new Merge();
  m.joined({ history: range(1, 10), epoch: E, seq: 10 }, false);
  // 2,000 messages later the server cannot tell them all: the latest 5 instead.
  const latest = [...range(2008, 2010), msg(9)];
  const answer = { history: [msg(2006), msg(2007), ...latest], epoch: E, seq: 2010, recovered: false };
  const { messages, gap } = m.joined(answer, true);
  assert.equal(gap, true);
  assert.deepEqual(seqs(messages), [2006, 2007, 2008, 2009, 2010], 'msg 9 was delivered already');
  assert.deepEqual(m.since(), { epoch: E, seq: 2010 });
  assert.equal(m.accept(msg(2010)), false);
  assert.equal(m.accept(msg(2011)), true);
});

test('a new epoch is a gap even when the server says recovered', () => {
  const m = new Merge();
  m.joined({ history: range(1, 20), epoch: E, seq: 20 }, false);
  const E2 = 'epoch-2';
  // The ordering point lost its count: positions start over, and ids seen stay seen.
  const history = [{ ...msg(19), epoch: E2, seq: 1 }, msg(2, E2), msg(3, E2)];
  const { messages, gap } = m.joined({ history, epoch: E2, seq: 3, recovered: true }, true);
  assert.equal(gap, true);
  assert.deepEqual(messages.map((x) => x.id), [msg(2, E2).id, msg(3, E2).id]);
  assert.deepEqual(m.since(), { epoch: E2, seq: 3 });
  assert.equal(m.accept(msg(4, E2)), true);
  assert.equal(m.accept(msg(21)), true, 'a message of another epoch is judged by id');
});

test('a joined answer without a position (Redis unreachable) is a gap on a rejoin', () => {
  const m = new Merge();
  m.joined({ history: range(1, 3), epoch: E, seq: 3 }, false);
  const { messages, gap } = m.joined({ history: range(2, 5), recovered: false }, true);
  assert.equal(gap, true);
  assert.deepEqual(seqs(messages), [4, 5]);
  assert.deepEqual(m.since(), { epoch: E, seq: 5 });
});

test('a first join (not a rejoin) is never a gap', () => {
  const m = new Merge();
  assert.equal(m.joined({ history: range(1, 2), epoch: E, seq: 2, recovered: false }, false).gap, false);
});

test('the bounded id set forgets the oldest first', () => {
  const m = new Merge(3);
  for (const id of ['a', 'b', 'c']) assert.equal(m.accept({ id }), true);
  assert.equal(m.accept({ id: 'a' }), false);
  assert.equal(m.accept({ id: 'd' }), true);   // forgets a
  assert.equal(m.recent.size, 3);
  assert.equal(m.accept({ id: 'a' }), true, 'a was forgotten');   // forgets b
  assert.equal(m.accept({ id: 'b' }), true, 'b was forgotten');
  assert.equal(m.accept({ id: 'd' }), false, 'd is still remembered');
  assert.deepEqual([...m.recent], ['d', 'a', 'b']);
});

test('positions still drop a forgotten id\'s repeat within the epoch', () => {
  const m = new Merge(2);
  m.joined({ history: [], epoch: E, seq: 0 }, false);
  for (const x of range(1, 5)) assert.equal(m.accept(x), true);
  assert.equal(m.recent.has(msg(1).id), false);
  assert.equal(m.accept(msg(1)), false, 'seq 1 is behind the position');
});
