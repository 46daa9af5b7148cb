import { defineConfig } from 'vitest/config';

/**
 * CI runs the suite at a load average of 8 on 2 cores, where tfjs work and process start-up take
 * 4-5x as long as on an idle machine. Every test that trains, spawns processes or loads tfjs
 * models passes its own timeout (test/helpers/timeouts.ts or the file's constants); these
 * defaults, far above vitest's 5 s / 10 s, are the second line for everything else.
 */
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
