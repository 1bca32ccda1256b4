// The values of a state channel as plain logic (src/values.js, SPEC 16): RFC 7396
// merge patches, full and partial snapshots, tombstones, keyed publications, deltas
// against the held base, the per-key duplicate rule and the `keys` narrowing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergePatch, ChannelValues } from '../src/values.js';

test('mergePatch: every example of RFC 7396 appendix A', () => {
  const cases = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [['a', 'b'], ['c', 'd'], ['c', 'd']],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [target, patch, result] of cases) {
    assert.deepEqual(mergePatch(target, patch), result, `${JSON.stringify(target)} + ${JSON.stringify(patch)}`);
  }
});

test('mergePatch: arrays are replaced wholesale, null removes members, the inputs stay as they were', () => {
  const target = { sizes: [40, 41, 42], price: { amount: 100, currency: 'EUR' }, tag: 'new' };
  const before = structuredClone(target);
  const patch = { sizes: [41], price: { amount: 90 }, tag: null };
  const out = mergePatch(target, patch);
  assert.deepEqual(out, { sizes: [41], price: { amount: 90, currency: 'EUR' } });
  assert.deepEqual(target, before, 'the held value is not modified');
  assert.deepEqual(patch, { sizes: [41], price: { amount: 90 }, tag: null });
  const polluted = mergePatch({}, JSON.parse('{"__proto__": {"admin": true}}'));
  assert.equal(Object.getPrototypeOf(polluted), Object.prototype, '"__proto__" is a member, not the prototype');
  assert.deepEqual(Object.keys(polluted), ['__proto__']);
  assert.equal({}.admin, undefined);
});

const entry = (key, offset, payload) => ({ key, offset, payload, type: 'level', timestamp: 't' });
const tomb = (key, offset) => ({ key, offset, deleted: true, timestamp: 't' });

test('a full snapshot replaces the values in place; changed keys are those added, removed or at another version', () => {
  const v = new ChannelValues();
  const map = v.map;
  assert.deepEqual(v.snapshot({ full: true, epoch: 'e1', offset: 3, entries: [entry('a', 1, 1), entry('b', 2, 2), entry('c', 3, 3)] }).sort(), ['a', 'b', 'c']);
  assert.deepEqual([...v.map], [['a', 1], ['b', 2], ['c', 3]]);
  const changed = v.snapshot({ full: true, epoch: 'e1', offset: 6, entries: [entry('a', 1, 1), entry('c', 5, 30), tomb('x', 4), entry('d', 6, 4)] });
  assert.deepEqual(changed.sort(), ['b', 'c', 'd'], 'a is unchanged (same offset, same epoch)');
  assert.deepEqual([...v.map].sort(), [['a', 1], ['c', 30], ['d', 4]]);
  assert.equal(v.map, map, 'the same Map object');
  assert.equal(v.offsetOf('x'), 4, 'a tombstone keeps its offset');
  assert.deepEqual(v.snapshot({ full: true, epoch: 'e2', offset: 1, entries: [entry('a', 1, 1)] }).sort(), ['a', 'c', 'd'], 'another epoch: every key counts as changed');
  assert.deepEqual([...v.map], [['a', 1]]);
  assert.equal(v.offsetOf('c'), undefined, 'offsets of the old epoch are gone');
});

test('a partial snapshot merges: tombstones remove keys, older versions never replace newer ones', () => {
  const v = new ChannelValues();
  v.snapshot({ full: true, epoch: 'e', offset: 3, entries: [entry('a', 1, 'a1'), entry('b', 2, 'b2'), entry('c', 3, 'c3')] });
  v.publication({ key: 'a', offset: 9, payload: 'a9' });
  const changed = v.snapshot({ full: false, epoch: 'e', offset: 9, entries: [tomb('b', 5), entry('d', 6, 'd6'), entry('a', 7, 'a7'), tomb('zz', 8)] });
  assert.deepEqual(changed.sort(), ['b', 'd']);
  assert.deepEqual([...v.map].sort(), [['a', 'a9'], ['c', 'c3'], ['d', 'd6']]);
  assert.equal(v.offsetOf('a'), 9);
  assert.equal(v.offsetOf('b'), 5);
});

test('keyed publications: set, delete, delta against the held base; the changed flag', () => {
  const v = new ChannelValues();
  v.snapshot({ full: true, epoch: 'e', offset: 2, entries: [entry('sku1', 1, { qty: 5, sizes: [40, 41], note: 'x' }), entry('sku2', 2, { qty: 1 })] });
  const d = v.publication({ key: 'sku1', offset: 3, delta: true, base: 1, payload: { qty: 4, sizes: [41], note: null } });
  assert.deepEqual(d, { payload: { qty: 4, sizes: [41] }, changed: true });
  assert.deepEqual(v.map.get('sku1'), { qty: 4, sizes: [41] });
  assert.equal(v.offsetOf('sku1'), 3);
  assert.deepEqual(v.publication({ key: 'sku1', offset: 4, delta: true, base: 1, payload: { qty: 0 } }), { missingBase: true }, 'base 1 is no longer the held version');
  assert.deepEqual(v.publication({ key: 'nope', offset: 4, delta: true, base: 2, payload: { qty: 0 } }), { missingBase: true }, 'a key not held');
  assert.equal(v.offsetOf('sku1'), 3, 'a missing base changes nothing');
  assert.deepEqual(v.publication({ key: 'sku2', offset: 5, deleted: true }), { payload: undefined, changed: true });
  assert.equal(v.map.has('sku2'), false);
  assert.deepEqual(v.publication({ key: 'sku3', offset: 6, payload: [1, 2] }), { payload: [1, 2], changed: true });
  assert.deepEqual(v.publication({ key: 'ghost', offset: 7, deleted: true }), { payload: undefined, changed: false }, 'deleting an absent key changes nothing');
});

test('stale keyed publications: not above the key\'s own offset, or not above the last snapshot', () => {
  const v = new ChannelValues();
  v.snapshot({ full: true, epoch: 'e', offset: 10, entries: [entry('a', 4, 1), entry('b', 10, 2)] });
  assert.equal(v.isStale('a', 4), true);
  assert.equal(v.isStale('c', 7), true, 'at or below the snapshot: old news for any key');
  assert.equal(v.isStale('c', 11), false);
  v.publication({ key: 'c', offset: 14, payload: 3 });
  v.publication({ key: 'a', offset: 12, payload: 4 });
  assert.equal(v.isStale('a', 13), false, 'out of channel order, above its own key\'s newest');
  assert.equal(v.isStale('c', 14), true);
  assert.equal(v.isStale('a', 12), true);
});

test('keys narrows the visible values; other keys are kept apart so their deltas still apply', () => {
  const v = new ChannelValues(['a']);
  assert.equal(v.wants('a'), true);
  assert.equal(v.wants('b'), false);
  const changed = v.snapshot({ full: true, epoch: 'e', offset: 2, entries: [entry('a', 1, { n: 1 }), entry('b', 2, { n: 2 })] });
  assert.deepEqual(changed, ['a']);
  assert.deepEqual([...v.map], [['a', { n: 1 }]]);
  const r = v.publication({ key: 'b', offset: 3, delta: true, base: 2, payload: { n: 3 } });
  assert.deepEqual(r, { payload: { n: 3 }, changed: false });
  assert.deepEqual([...v.map], [['a', { n: 1 }]]);
  const before = v.version;
  v.publication({ key: 'a', offset: 4, payload: { n: 4 } });
  assert.equal(v.version, before + 1, 'a visible change counts');
});
