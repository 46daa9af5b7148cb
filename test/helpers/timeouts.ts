/**
 * Timeouts for tests that train, build or load tfjs models, or spawn processes, sized for a
 * loaded machine: CI runs the suite at a load average of 8 on 2 cores, where such a test takes
 * 4-5x its idle time (vitest's 5 s default failed `same seed gives the same weights with
 * dropout` there). Files with real-process runs keep their own START_MS / RUN_MS / TEST_TIMEOUT.
 */
/** A test (or hook) that builds, trains or loads tfjs models in process, or spawns a process. */
export const HEAVY_TEST_MS = 120_000;
