// The outbox of pending sends: bounded, one entry per id, in the order made,
// and each promise settled exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Outbox, SwitchboardError } from '../switchboard.js';
import { uuid } from '../outbox.js';

/** Whether `promise` has settled (after pending callbacks ran): 'pending', or its outcome. */
async function outcome(promise) {
  let r = 'pending';
  promise.then((v) => { r = { ok: v }; }, (e) => { r = { err: e }; });
  await new Promise((done) => setImmediate(done));
  return r;
}

test('past its bound, add throws outbox_full and keeps what it has', () => {
  const box = new Outbox(3);
  for (let i = 0; i < 3; i++) box.add({ id: `id-${i}`, room: 'r', text: `t${i}` });
  assert.equal(box.size, 3);
  assert.throws(() => box.add({ id: 'id-3', room: 'r', text: 't3' }), (e) => e instanceof SwitchboardError && e.code === 'outbox_full');
  assert.equal(box.size, 3);
  assert.equal(box.get('id-3'), undefined);
  // Settling one frees its place.
  assert.equal(box.resolve('id-0', { id: 'id-0', seq: 1, epoch: 'e' }), true);
  box.add({ id: 'id-3', room: 'r', text: 't3' });
  assert.deepEqual(box.pending().map((e) => e.id), ['id-1', 'id-2', 'id-3']);
});

test('an id already pending is refused with duplicate_id; a settled one may come back', async () => {
  const box = new Outbox(10);
  const first = box.add({ id: 'same', room: 'r', text: 'a' });
  assert.throws(() => box.add({ id: 'same', room: 'other', text: 'b' }), (e) => e instanceof SwitchboardError && e.code === 'duplicate_id');
  assert.equal(box.size, 1);
  assert.equal(box.get('same').text, 'a');
  box.resolve('same', { id: 'same', seq: 1, epoch: 'e' });
  assert.deepEqual(await first.promise, { id: 'same', seq: 1, epoch: 'e' });
  const again = box.add({ id: 'same', room: 'r', text: 'c' });
  assert.equal(await outcome(again.promise), 'pending');
});

test('resolve then reject: the ack stands, the rejection is ignored', async () => {
  const box = new Outbox(10);
  const { promise } = box.add({ id: 'a', room: 'r', text: 'x' });
  assert.equal(await outcome(promise), 'pending');
  assert.equal(box.resolve('a', { id: 'a', seq: 7, epoch: 'e1' }), true);
  assert.equal(box.reject('a', new SwitchboardError('closed')), false);
  assert.equal(box.resolve('a', { id: 'a', seq: 8, epoch: 'e1' }), false);
  assert.deepEqual(await outcome(promise), { ok: { id: 'a', seq: 7, epoch: 'e1' } });
  assert.equal(box.size, 0);
});

test('reject then resolve: the rejection stands, the late ack is ignored', async () => {
  const box = new Outbox(10);
  const { promise } = box.add({ id: 'b', room: 'r', text: 'x' });
  assert.equal(box.reject('b', new SwitchboardError('too_large', 'too long')), true);
  assert.equal(box.resolve('b', { id: 'b', seq: 1, epoch: 'e' }), false);
  const r = await outcome(promise);
  assert.equal(r.err.code, 'too_large');
  assert.equal(r.err.message, 'too_large: too long');
});

test('settling an unknown id does nothing', () => {
  const box = new Outbox(2);
  assert.equal(box.resolve('nope', { id: 'nope', seq: null, epoch: null }), false);
  assert.equal(box.reject('nope', new Error('x')), false);
});

test('a retry timer is cleared when its send settles', async () => {
  const box = new Outbox(2);
  const { entry, promise } = box.add({ id: 't', room: 'r', text: 'x' });
  let fired = false;
  entry.timer = setTimeout(() => { fired = true; }, 20);
  box.resolve('t', { id: 't', seq: 1, epoch: 'e' });
  await promise;
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(fired, false);
  assert.equal(entry.timer, null);
});

test('pending(room) lists that room\'s sends in the order made', () => {
  const box = new Outbox(100);
  const made = [];
  for (let i = 0; i < 30; i++) {
    const room = ['a', 'b', 'c'][i % 3];
    box.add({ id: `m${i}`, room, text: String(i) }).promise.catch(() => {});
    made.push({ id: `m${i}`, room });
  }
  box.resolve('m3', { id: 'm3', seq: 1, epoch: 'e' });
  box.reject('m4', new SwitchboardError('closed'));
  const left = made.filter((m) => m.id !== 'm3' && m.id !== 'm4');
  for (const room of ['a', 'b', 'c']) {
    assert.deepEqual(box.pending(room).map((e) => e.id), left.filter((m) => m.room === room).map((m) => m.id));
  }
  assert.deepEqual(box.pending().map((e) => e.id), left.map((m) => m.id));
  assert.deepEqual(box.pending('nobody'), []);
});

test('SwitchboardError carries the code', () => {
  const e = new SwitchboardError('forbidden', 'not this room');
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'SwitchboardError');
  assert.equal(e.code, 'forbidden');
  assert.equal(new SwitchboardError('closed').message, 'closed');
});

test('generated ids are distinct UUID v4s', () => {
  const ids = new Set(Array.from({ length: 1000 }, () => uuid()));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});
