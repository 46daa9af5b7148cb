/**
 * Prints a short-lived join link for browser workers (coordinator/join-key.ts): a key derived
 * from the run token that expires, so the token itself never goes into a URL.
 *
 *   GAN_TOKEN=... npx tsx scripts/join-link.ts --url https://coordinator.example.org:8600 --hours 4
 *   npx tsx scripts/join-link.ts --token-file /etc/gan/token --url https://host:8600 --hours 0.5
 *
 * The key travels in the link's #fragment, which browsers do not send to any server; the page
 * moves it into its token field and drops it from the address bar. It still lands in the
 * browser's history and wherever the link was pasted, hence the expiry (at most 7 days).
 */
import { parseArgs } from 'node:util';
import { loadToken } from '../shared/auth.ts';
import { joinKey, MAX_JOIN_KEY_S } from '../coordinator/join-key.ts';

const { values } = parseArgs({ options: { url: { type: 'string' }, hours: { type: 'string', default: '4' }, 'token-file': { type: 'string' } } });
const token = loadToken(values['token-file']);
if (!token) {
  process.stderr.write('error: set GAN_TOKEN or pass --token-file (the run token the key is derived from)\n');
  process.exit(2);
}
const hours = Number(values.hours);
if (!(hours > 0) || hours * 3600 > MAX_JOIN_KEY_S) {
  process.stderr.write(`error: --hours must be > 0 and at most ${MAX_JOIN_KEY_S / 3600}\n`);
  process.exit(2);
}
const url = (values.url ?? 'http://localhost:8600').replace(/\/+$/, '');
const expires = Math.floor(Date.now() / 1000 + hours * 3600);
process.stdout.write(`${url}/join#key=${joinKey(token, expires)}\n`);
process.stderr.write(`valid until ${new Date(expires * 1000).toISOString()}\n`);
