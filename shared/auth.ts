/**
 * Shared-token authentication: the coordinator sends a random nonce, the worker answers with
 * HMAC-SHA256(token, nonce). The token itself never crosses the wire, and a recorded answer is
 * useless against the next connection's fresh nonce.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from './errors.ts';

export const NONCE_BYTES = 32;

export function newNonce(): Uint8Array {
  return new Uint8Array(randomBytes(NONCE_BYTES));
}

export function hmacOf(token: string, nonce: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', token).update(nonce).digest());
}

export function verifyHmac(token: string, nonce: Uint8Array, mac: Uint8Array): boolean {
  const expected = hmacOf(token, nonce);
  return mac.length === expected.length && timingSafeEqual(expected, mac);
}

/**
 * The token from --token-file (first line, trimmed) or else the GAN_TOKEN environment variable;
 * null when neither is set.
 */
export function loadToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (tokenFile) {
    let text: string;
    try {
      text = readFileSync(tokenFile, 'utf8');
    } catch (err) {
      throw new ConfigError('TOKEN_FILE_UNREADABLE', `cannot read --token-file ${tokenFile}: ${(err as Error).message}`);
    }
    const token = text.split(/\r?\n/)[0].trim();
    if (!token) throw new ConfigError('TOKEN_EMPTY', `--token-file ${tokenFile} is empty; put the shared token on its first line`);
    return token;
  }
  const fromEnv = env.GAN_TOKEN?.trim();
  return fromEnv ? fromEnv : null;
}
