/**
 * "Several machines" on one box, for test/multihost.test.ts and bench/multihost.ts: one network
 * namespace per host, each with its own eth0 (a veth) whose peer sits on a bridge in a hub
 * namespace, addresses <subnet>.1, .2, ... in the order the hosts are named. Every link, address
 * and qdisc lives inside namespaces created here (never in the host's own namespace), with names
 * unique to the caller's tag, so `destroy()` (deleting the namespaces) removes all of it.
 *
 * A namespace that still holds processes outlives `ip netns del` (only its name goes), so kill
 * the processes running inside first (test/helpers/processes.ts `killAll`), then destroy().
 * A last-resort process 'exit' hook deletes whatever is left if the caller never got to it.
 *
 * Bandwidth caps use tc's tbf (token bucket) on both ends of a host's veth pair: the host's eth0
 * egress caps what it sends, the hub end's egress caps what it receives. Both count whole
 * Ethernet frames (14-byte header + IP packet), as the interface byte counters do.
 */
import { execFileSync, spawnSync } from 'node:child_process';

/** Why namespaces cannot be used here (not root, no `ip`), or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  if (spawnSync('ip', ['-V'], { stdio: 'ignore' }).status !== 0) return "needs iproute2's `ip` command";
  return null;
}

/** Why tc tbf cannot be used (no `tc`), or null. Whether the kernel has sch_tbf shows on first use. */
export function tcUnavailable(): string | null {
  if (spawnSync('tc', ['-V'], { stdio: 'ignore' }).status !== 0) return "needs iproute2's `tc` command";
  return null;
}

const run = (cmd: string, args: string[]): string => {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).toString();
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`\`${cmd} ${args.join(' ')}\` failed: ${e.stderr?.toString().trim() || e.message}`);
  }
};

export const ip = (...args: string[]): string => run('ip', args);
const tc = (...args: string[]): string => run('tc', args);

export interface NetHost {
  /** The caller's name for the host, e.g. "coordinator", "w1". */
  readonly name: string;
  /** Its namespace. */
  readonly ns: string;
  /** Its eth0 address (no prefix length). */
  readonly address: string;
}

export interface LinkBytes {
  /** Bytes the host sent on eth0 (Ethernet frames). */
  tx: number;
  /** Bytes the host received on eth0. */
  rx: number;
}

export interface TbfCap {
  /** Token rate in bits per second (each direction). */
  bitsPerSec: number;
  /** Bucket size in bytes; default max(64 KiB, 2 ms at the rate). */
  burstBytes?: number;
  /** Longest a frame may wait in the queue before it is dropped (sets tbf's limit); default 100 ms. */
  latencyMs?: number;
}

export interface Network {
  readonly tag: string;
  readonly subnet: string;
  readonly hub: string;
  readonly hosts: Readonly<Record<string, NetHost>>;
  /** A command prefix that execs its argument inside the host's namespace (for spawnCli's `prefix`). */
  exec(host: string): string[];
  /** eth0 byte counters of a host (cumulative since the network was created). */
  linkBytes(host: string): LinkBytes;
  /** Caps a host's link in both directions with tbf (replacing any earlier cap). */
  cap(host: string, cap: TbfCap): void;
  /** Removes a cap set by cap() (no-op without one). */
  uncap(host: string): void;
  /** The tbf qdiscs on a host's two link ends, as `tc qdisc show` prints them. */
  describeCap(host: string): string;
  /** Deletes every namespace (and so every veth, bridge and qdisc) of this network. Idempotent. */
  destroy(): void;
}

export interface NetworkOptions {
  /** Prefix of every namespace name; unique per caller and run, e.g. `gan<pid base 36><random>`. */
  tag: string;
  /** First three octets, e.g. "10.213.7": hosts get .1, .2, ... */
  subnet: string;
  /** Host names, each <= 12 characters (the hub end of its veth is `v-<name>`, and Linux allows 15). */
  hosts: string[];
}

const live = new Set<Network>();
let exitHookInstalled = false;

/** Builds the network; on failure removes whatever it had created and rethrows. */
export function createNetwork(opts: NetworkOptions): Network {
  const { tag, subnet } = opts;
  for (const h of opts.hosts) {
    if (!/^[a-z0-9]{1,12}$/i.test(h)) throw new Error(`host name '${h}' must be 1-12 letters or digits (it becomes part of an interface name)`);
  }
  const hub = `${tag}-hub`;
  const hosts: Record<string, NetHost> = {};
  opts.hosts.forEach((name, i) => (hosts[name] = { name, ns: `${tag}-${name}`, address: `${subnet}.${i + 1}` }));
  const created: string[] = [];
  const capped = new Set<string>();
  const host = (name: string): NetHost => {
    const h = hosts[name];
    if (!h) throw new Error(`no host '${name}' in network ${tag} (hosts: ${Object.keys(hosts).join(', ')})`);
    return h;
  };
  const linkEnds = (name: string) => [
    { ns: host(name).ns, dev: 'eth0' }, // what the host sends
    { ns: hub, dev: `v-${name}` }, // what the host receives
  ];

  const net: Network = {
    tag,
    subnet,
    hub,
    hosts,
    exec: (name) => ['ip', 'netns', 'exec', host(name).ns],
    linkBytes(name) {
      const [info] = JSON.parse(ip('-n', host(name).ns, '-j', '-s', 'link', 'show', 'dev', 'eth0')) as { stats64: { rx: { bytes: number }; tx: { bytes: number } } }[];
      return { tx: info.stats64.tx.bytes, rx: info.stats64.rx.bytes };
    },
    cap(name, c) {
      const rateBytes = c.bitsPerSec / 8;
      const burst = Math.round(c.burstBytes ?? Math.max(64 * 1024, rateBytes * 0.002));
      const latencyMs = c.latencyMs ?? 100;
      for (const end of linkEnds(name)) {
        tc('-n', end.ns, 'qdisc', 'replace', 'dev', end.dev, 'root', 'tbf', 'rate', `${Math.round(c.bitsPerSec)}bit`, 'burst', String(burst), 'latency', `${latencyMs}ms`);
      }
      capped.add(name);
    },
    uncap(name) {
      if (!capped.has(name)) return;
      for (const end of linkEnds(name)) {
        try {
          tc('-n', end.ns, 'qdisc', 'del', 'dev', end.dev, 'root');
        } catch {
          // already gone
        }
      }
      capped.delete(name);
    },
    describeCap(name) {
      return linkEnds(name)
        .map((end) => `${end.ns}/${end.dev}: ${tc('-n', end.ns, 'qdisc', 'show', 'dev', end.dev).trim()}`)
        .join('; ');
    },
    destroy() {
      for (const ns of created.splice(0).reverse()) {
        try {
          ip('netns', 'del', ns); // takes its veth ends (and so their peers and qdiscs) with it
        } catch {
          // already gone
        }
      }
      capped.clear();
      live.delete(net);
    },
  };

  live.add(net);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Last resort for a runner that dies without cleaning up.
    process.once('exit', () => {
      for (const n of [...live]) n.destroy();
    });
  }
  try {
    for (const ns of [hub, ...Object.values(hosts).map((h) => h.ns)]) {
      ip('netns', 'add', ns);
      created.push(ns);
    }
    ip('-n', hub, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', hub, 'link', 'set', 'br0', 'up');
    for (const h of Object.values(hosts)) {
      const hubEnd = `v-${h.name}`;
      // Created inside the hub namespace with the peer moved straight into the host's namespace.
      ip('-n', hub, 'link', 'add', hubEnd, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns);
      ip('-n', hub, 'link', 'set', hubEnd, 'master', 'br0');
      ip('-n', hub, 'link', 'set', hubEnd, 'up');
      ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0');
      ip('-n', h.ns, 'link', 'set', 'eth0', 'up');
      ip('-n', h.ns, 'link', 'set', 'lo', 'up');
    }
  } catch (err) {
    net.destroy();
    throw err;
  }
  return net;
}
