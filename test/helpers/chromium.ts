/**
 * Debian's Chromium for the browser tests (dashboard, generator page, browser workers), driven
 * by playwright-core, which never downloads a browser. The flags keep it off the network and
 * quiet: no background services, no component updates, no QUIC probes.
 */
import { existsSync } from 'node:fs';
import { expect } from 'vitest';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'];

/** A fresh headless Chromium (playwright gives each launch a temporary profile and removes it on close). */
export async function launchChromium(timeoutMs = 30_000): Promise<Browser> {
  expect(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`).toBe(true);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: timeoutMs });
}
