/**
 * Short-lived join keys: a credential for browser links that is not the run token.
 *
 *   key = "j1." + expiry (unix seconds, 10 digits) + "." + base64url(HMAC-SHA256(token, "gan-join-v1." + expiry))
 *
 * Whoever holds the token can mint keys (scripts/join-link.ts); the coordinator needs no state to
 * check one: a worker's hello names the key's expiry (`joinExpires`), the coordinator re-derives
 * the key from its token and that expiry, refuses it once expired (JOIN_KEY_EXPIRED), and the
 * worker proves it holds the key with the usual HMAC of the nonce, the key standing in for the
 * token. A key leaked in a link, a chat log or a browser history is useless after its expiry,
 * and it never reveals the token (the HMAC is one-way).
 */
import { createHmac } from 'node:crypto';

export const JOIN_KEY = /^j1\.(\d{10})\.([A-Za-z0-9_-]{43})$/;

/** Longest validity a coordinator accepts, so a key cannot be minted to last for ever. */
export const MAX_JOIN_KEY_S = 7 * 24 * 3600;

export function joinKey(token: string, expiresAtS: number): string {
  const exp = String(Math.floor(expiresAtS)).padStart(10, '0');
  return `j1.${exp}.${createHmac('sha256', token).update(`gan-join-v1.${exp}`).digest('base64url')}`;
}

/**
 * The secret a worker whose hello names `joinExpires` must answer the challenge with, or why it
 * is refused (expired, or an expiry further away than any key may last).
 */
export function joinKeyFor(token: string, joinExpires: number, nowS = Date.now() / 1000): { key: string } | { code: 'JOIN_KEY_EXPIRED'; reason: string } {
  if (joinExpires <= nowS) {
    return { code: 'JOIN_KEY_EXPIRED', reason: `this join link expired at ${new Date(joinExpires * 1000).toISOString()}: ask the operator for a new one (or use the run token)` };
  }
  if (joinExpires > nowS + MAX_JOIN_KEY_S) {
    return { code: 'JOIN_KEY_EXPIRED', reason: `this join link claims to be valid until ${new Date(joinExpires * 1000).toISOString()}, longer than any join link may last (${MAX_JOIN_KEY_S / 86400} days)` };
  }
  return { key: joinKey(token, joinExpires) };
}
