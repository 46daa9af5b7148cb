/**
 * Where each worker sits in the relay tree (--fan-out f): pure bookkeeping, no sockets, so the
 * placement rules are unit-tested on their own (test/relay-plan.test.ts). The coordinator
 * (coordinator/relay-tree.ts) applies the moves it returns by sending tree messages.
 *
 * Rules:
 *  - The coordinator (ROOT) takes up to f children; a worker that can accept inbound connections
 *    (a relay) takes up to f; a leaf (no listener, e.g. behind NAT) takes none.
 *  - A node goes to the shallowest node with room, breadth first, in the order nodes joined, so
 *    the tree stays as shallow as the relays allow (depth ~ log_f N).
 *  - When nobody has room and the newcomer is a relay, it takes the place of the shallowest leaf
 *    and that leaf becomes its child: relays are preferred as interior nodes.
 *  - When nobody has room and the newcomer is a leaf, it hangs off the coordinator beyond f
 *    (`overflow`): the only place that always accepts; the coordinator's link then carries more.
 *  - A removed or demoted (suspect) relay's children are placed again by the same rules, relays
 *    first, each keeping its own subtree (never under its own descendants).
 */

/** The coordinator, parent of the top level. Session ids start at 1, so 0 is free. */
export const ROOT = 0;

export interface PlanNode {
  parent: number;
  /** Accepts children (it listens and is not suspect). */
  canRelay: boolean;
  /** Children in the order they were placed. */
  children: number[];
}

/** One placement: node `id` now hangs under `to` (ROOT: the coordinator); `from` is undefined for a newcomer. */
export interface Move {
  id: number;
  from?: number;
  to: number;
  /** Placed under the coordinator beyond the fan-out, because nobody had room. */
  overflow?: boolean;
}

export class RelayPlan {
  readonly nodes = new Map<number, PlanNode>();
  private readonly rootChildren: number[] = [];

  constructor(readonly fanOut: number) {
    if (!Number.isInteger(fanOut) || fanOut < 1) throw new RangeError(`fan-out must be an integer >= 1, got ${fanOut}`);
  }

  childrenOf(id: number): readonly number[] {
    return id === ROOT ? this.rootChildren : (this.nodes.get(id)?.children ?? []);
  }

  parentOf(id: number): number | undefined {
    return this.nodes.get(id)?.parent;
  }

  /** Number of edges from the coordinator (a top-level child has depth 1). */
  depthOf(id: number): number {
    let d = 0;
    for (let at = id; at !== ROOT; d++) {
      const n = this.nodes.get(at);
      if (!n) return -1;
      at = n.parent;
    }
    return d;
  }

  /** `id` and every node under it. */
  subtree(id: number): number[] {
    const out: number[] = [];
    const walk = (n: number) => {
      out.push(n);
      for (const c of this.childrenOf(n)) walk(c);
    };
    walk(id);
    return out;
  }

  /** Every node in depth-first pre-order: each subtree is contiguous (contiguous shard ranges merge at its relay). */
  preorder(): number[] {
    const out: number[] = [];
    for (const c of this.rootChildren) out.push(...this.subtree(c));
    return out;
  }

  /** Ancestors of `id`, nearest first, ROOT excluded. */
  ancestors(id: number): number[] {
    const out: number[] = [];
    for (let at = this.nodes.get(id)?.parent; at !== undefined && at !== ROOT; at = this.nodes.get(at)?.parent) out.push(at);
    return out;
  }

  private room(id: number): boolean {
    if (id === ROOT) return this.rootChildren.length < this.fanOut;
    const n = this.nodes.get(id)!;
    return n.canRelay && n.children.length < this.fanOut;
  }

  /** Shallowest node with room, breadth first, skipping `exclude` (a subtree being moved). */
  private findRoom(exclude: ReadonlySet<number>): number | undefined {
    const queue = [ROOT];
    for (let i = 0; i < queue.length; i++) {
      const at = queue[i];
      if (this.room(at)) return at;
      for (const c of this.childrenOf(at)) if (!exclude.has(c) && this.nodes.get(c)!.canRelay) queue.push(c);
    }
    return undefined;
  }

  /** Shallowest leaf (a node that cannot relay), breadth first, outside `exclude`. */
  private findLeaf(exclude: ReadonlySet<number>): number | undefined {
    const queue = [...this.rootChildren];
    for (let i = 0; i < queue.length; i++) {
      const at = queue[i];
      if (exclude.has(at)) continue;
      const n = this.nodes.get(at)!;
      if (!n.canRelay) return at;
      queue.push(...n.children);
    }
    return undefined;
  }

  private attach(id: number, parent: number): void {
    this.nodes.get(id)!.parent = parent;
    if (parent === ROOT) this.rootChildren.push(id);
    else this.nodes.get(parent)!.children.push(id);
  }

  private detach(id: number): void {
    const n = this.nodes.get(id);
    if (!n) return;
    const list = n.parent === ROOT ? this.rootChildren : this.nodes.get(n.parent)?.children;
    const i = list?.indexOf(id) ?? -1;
    if (list && i >= 0) list.splice(i, 1);
  }

  /** Places node `id` (already in `nodes`, detached) with its subtree; returns the moves. */
  private place(id: number, from: number | undefined): Move[] {
    const own = new Set(this.subtree(id));
    const to = this.findRoom(own);
    if (to !== undefined) {
      this.attach(id, to);
      return [{ id, from, to }];
    }
    if (this.nodes.get(id)!.canRelay && this.nodes.get(id)!.children.length < this.fanOut) {
      const leaf = this.findLeaf(own);
      if (leaf !== undefined) {
        const slot = this.nodes.get(leaf)!.parent;
        this.detach(leaf);
        this.attach(id, slot);
        this.attach(leaf, id);
        return [{ id, from, to: slot }, { id: leaf, from: slot, to: id }];
      }
    }
    this.attach(id, ROOT);
    return [{ id, from, to: ROOT, overflow: true }];
  }

  /** A new tree member; `canRelay` when it listens for children. */
  join(id: number, canRelay: boolean): Move[] {
    if (this.nodes.has(id)) throw new Error(`node ${id} is already in the tree`);
    this.nodes.set(id, { parent: ROOT, canRelay, children: [] });
    return this.place(id, undefined);
  }

  /** Children of `id` placed again (after it left or was demoted), relays first. */
  private replaceChildren(id: number): Move[] {
    const orphans = [...this.childrenOf(id)];
    const n = this.nodes.get(id);
    if (n) n.children = [];
    orphans.sort((a, b) => Number(this.nodes.get(b)!.canRelay) - Number(this.nodes.get(a)!.canRelay));
    const moves: Move[] = [];
    for (const o of orphans) moves.push(...this.place(o, id));
    return moves;
  }

  /** A member left: its children (with their subtrees) are placed again. */
  remove(id: number): Move[] {
    if (!this.nodes.has(id)) return [];
    this.detach(id);
    const moves = this.replaceChildren(id);
    this.nodes.delete(id);
    return moves;
  }

  /** Moves `id` (with its subtree) under the coordinator, beyond the fan-out if need be: its path up is in doubt. */
  toRoot(id: number): Move[] {
    const n = this.nodes.get(id);
    if (!n || n.parent === ROOT) return [];
    const from = n.parent;
    this.detach(id);
    const overflow = this.rootChildren.length >= this.fanOut;
    this.attach(id, ROOT);
    return [{ id, from, to: ROOT, ...(overflow ? { overflow } : {}) }];
  }

  /** A relay is no longer trusted to relay (bad digest, stalled, unreachable): it stays as a leaf, its children move. */
  demote(id: number): Move[] {
    const n = this.nodes.get(id);
    if (!n || !n.canRelay) return [];
    n.canRelay = false;
    return this.replaceChildren(id);
  }
}
