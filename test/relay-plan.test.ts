/** The relay tree's placement rules (coordinator/relay-plan.ts), without sockets. */
import { describe, expect, it } from 'vitest';
import { RelayPlan, ROOT } from '../coordinator/relay-plan.ts';
import { dialableUrl, RelayTree } from '../coordinator/relay-tree.ts';
import type { WorkerSession } from '../coordinator/session.ts';
import type { Logger } from '../shared/log.ts';

/** Every node's parent, for compact assertions. */
const parents = (p: RelayPlan) => Object.fromEntries([...p.nodes].map(([id, n]) => [id, n.parent]));

/** Invariants: every node reachable once from ROOT, fan-out respected except flagged overflow, leaves childless. */
function checkShape(p: RelayPlan): void {
  const seen = p.preorder();
  expect(new Set(seen).size).toBe(seen.length);
  expect(new Set(seen)).toEqual(new Set(p.nodes.keys()));
  for (const [id, n] of p.nodes) {
    expect(n.children.length).toBeLessThanOrEqual(p.fanOut);
    if (!n.canRelay) expect(n.children).toEqual([]);
    for (const c of n.children) expect(p.parentOf(c)).toBe(id);
  }
}

describe('RelayPlan', () => {
  it('fills breadth first: the coordinator takes f, then each relay f', () => {
    const p = new RelayPlan(2);
    for (let id = 1; id <= 7; id++) p.join(id, true);
    expect(parents(p)).toEqual({ 1: ROOT, 2: ROOT, 3: 1, 4: 1, 5: 2, 6: 2, 7: 3 });
    expect(p.depthOf(7)).toBe(3);
    expect(p.preorder()).toEqual([1, 3, 7, 4, 2, 5, 6]);
    expect(p.ancestors(7)).toEqual([3, 1]);
    checkShape(p);
  });

  it('fan-out 1 is a chain', () => {
    const p = new RelayPlan(1);
    for (let id = 1; id <= 4; id++) p.join(id, true);
    expect(parents(p)).toEqual({ 1: ROOT, 2: 1, 3: 2, 4: 3 });
  });

  it('a relay joining when only leaves hang off the coordinator takes a leaf\'s place', () => {
    const p = new RelayPlan(2);
    p.join(1, false);
    p.join(2, false);
    const moves = p.join(3, true);
    expect(moves).toEqual([
      { id: 3, from: undefined, to: ROOT },
      { id: 1, from: ROOT, to: 3 },
    ]);
    expect(parents(p)).toEqual({ 1: 3, 2: ROOT, 3: ROOT });
    checkShape(p);
  });

  it('a leaf with no room anywhere hangs off the coordinator beyond f (overflow)', () => {
    const p = new RelayPlan(1);
    p.join(1, false);
    expect(p.join(2, false)).toEqual([{ id: 2, from: undefined, to: ROOT, overflow: true }]);
    expect(p.childrenOf(ROOT)).toEqual([1, 2]);
  });

  it('removing a relay re-places its children, relays first, keeping their subtrees', () => {
    const p = new RelayPlan(2);
    for (let id = 1; id <= 2; id++) p.join(id, true); // 1, 2 under ROOT
    p.join(3, false); // under 1
    p.join(4, true); // under 1
    p.join(5, false); // under 2
    p.join(6, false); // under 2
    p.join(7, false); // under 4
    expect(parents(p)).toEqual({ 1: ROOT, 2: ROOT, 3: 1, 4: 1, 5: 2, 6: 2, 7: 4 });
    const moves = p.remove(1);
    // The relay child (4) takes 1's slot under the coordinator, the leaf (3) goes under 4 next to 7.
    expect(moves).toEqual([
      { id: 4, from: 1, to: ROOT },
      { id: 3, from: 1, to: 4 },
    ]);
    expect(parents(p)).toEqual({ 2: ROOT, 3: 4, 4: ROOT, 5: 2, 6: 2, 7: 4 });
    checkShape(p);
  });

  it('a moved relay is never placed under its own subtree', () => {
    const p = new RelayPlan(1);
    for (let id = 1; id <= 3; id++) p.join(id, true); // chain 1 - 2 - 3
    const moves = p.remove(1);
    expect(moves).toEqual([{ id: 2, from: 1, to: ROOT }]);
    expect(parents(p)).toEqual({ 2: ROOT, 3: 2 });
  });

  it('demoting a suspect relay keeps it as a leaf and moves its children away', () => {
    const p = new RelayPlan(2);
    p.join(1, true);
    p.join(2, true);
    p.join(3, false); // under 1
    p.join(4, false); // under 1
    const moves = p.demote(1);
    expect(moves.map((m) => [m.id, m.to])).toEqual([
      [3, 2],
      [4, 2],
    ]);
    expect(p.nodes.get(1)!.canRelay).toBe(false);
    expect(p.childrenOf(1)).toEqual([]);
    expect(p.demote(1)).toEqual([]);
    checkShape(p);
  });

  it('keeps its invariants through random joins, removals and demotions', () => {
    for (const f of [1, 2, 3]) {
      const p = new RelayPlan(f);
      let next = 1;
      let x = 12345;
      const rnd = (n: number) => ((x = (x * 1103515245 + 12345) % 2 ** 31), x % n);
      for (let step = 0; step < 300; step++) {
        const ids = [...p.nodes.keys()];
        const r = rnd(10);
        if (r < 5 || ids.length === 0) p.join(next++, rnd(3) > 0);
        else if (r < 8) p.remove(ids[rnd(ids.length)]);
        else p.demote(ids[rnd(ids.length)]);
        const seen = p.preorder();
        expect(new Set(seen)).toEqual(new Set(p.nodes.keys()));
        for (const n of p.nodes.values()) {
          expect(n.children.length).toBeLessThanOrEqual(f);
          if (!n.canRelay) expect(n.children).toEqual([]);
        }
      }
    }
  });

  it('moves a node with its subtree under the coordinator, beyond the fan-out if need be', () => {
    const p = new RelayPlan(1);
    for (let id = 1; id <= 3; id++) p.join(id, true); // chain 1 - 2 - 3
    expect(p.toRoot(2)).toEqual([{ id: 2, from: 1, to: ROOT, overflow: true }]);
    expect(parents(p)).toEqual({ 1: ROOT, 2: ROOT, 3: 2 });
    expect(p.toRoot(2)).toEqual([]);
  });

  it('refuses a fan-out below 1', () => {
    expect(() => new RelayPlan(0)).toThrow(RangeError);
  });
});

describe('RelayTree: a relay killed while it has children', () => {
  /** Just what RelayTree uses of a session and of the logger; events are collected. */
  function harness() {
    const events: Record<string, unknown>[] = [];
    const record = (o: Record<string, unknown>) => void events.push(o);
    const log = { info: record, warn: record } as unknown as Logger;
    const session = (sessionId: number, workerId: string) => ({ sessionId, workerId, send: () => true }) as unknown as WorkerSession;
    const tree = new RelayTree(1, log, { moved: () => {} });
    const [top, mid, low] = [session(1, 'top'), session(2, 'mid'), session(3, 'low')];
    tree.offer(top, 'ws://top');
    tree.offer(mid, 'ws://mid');
    tree.offer(low, 'ws://low');
    return { events, tree, top, mid, low };
  }
  const named = (events: Record<string, unknown>[], e: string) => events.filter((x) => x.event === e);

  it('logs relay_lost when the coordinator notices first', () => {
    const { events, tree, top } = harness();
    tree.leave(top);
    expect(named(events, 'relay_lost')).toMatchObject([{ worker: 'top', children: 1 }]);
    expect(named(events, 'reparented')).toMatchObject([{ worker: 'mid', from: 'top', to: 'coordinator' }]);
  });

  it('still logs relay_lost when its child reported the loss first (the order a loaded machine often gives)', () => {
    const { events, tree, top } = harness();
    tree.demote(top, 'RELAY_LOST');
    tree.leave(top);
    expect(named(events, 'relay_lost')).toMatchObject([{ worker: 'top', children: 1, movedBefore: true }]);
    expect(named(events, 'reparented')).toMatchObject([{ worker: 'mid', from: 'top', to: 'coordinator' }]);
  });

  it('does not call a relay demoted for another reason, then gone, lost', () => {
    const { events, tree, top } = harness();
    tree.demote(top, 'RELAY_DIGEST_MISMATCH');
    tree.leave(top);
    expect(named(events, 'relay_lost')).toEqual([]);
  });
});

describe('dialableUrl: what children dial for a relay listening on every interface', () => {
  it('puts the address the coordinator sees in place of 0.0.0.0 or [::]; leaves named hosts and leaves alone', () => {
    expect(dialableUrl('ws://0.0.0.0:8700', '10.0.0.3')).toBe('ws://10.0.0.3:8700');
    expect(dialableUrl('ws://0.0.0.0:8700', '::ffff:10.0.0.3')).toBe('ws://10.0.0.3:8700');
    expect(dialableUrl('ws://[::]:8700', 'fd00::3')).toBe('ws://[fd00::3]:8700');
    expect(dialableUrl('wss://0.0.0.0:8700/relay', '10.0.0.3')).toBe('wss://10.0.0.3:8700/relay');
    expect(dialableUrl('ws://relay-7.example.org:8700', '10.0.0.3')).toBe('ws://relay-7.example.org:8700');
    expect(dialableUrl('ws://203.0.113.7:18700', '10.0.0.3')).toBe('ws://203.0.113.7:18700');
    expect(dialableUrl('', '10.0.0.3')).toBe('');
    expect(dialableUrl('ws://0.0.0.0:8700', undefined)).toBe('ws://0.0.0.0:8700');
  });
});
