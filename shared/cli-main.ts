/**
 * Entry-point wrapper for the CLIs: a GanError becomes one clear line with its stable code
 * (exit 2, the user's input was wrong); anything else is a bug and keeps its stack (exit 1).
 */
import { GanError } from './errors.ts';
import { tuneGcForLargeFrames } from './gc-tuning.ts';
import { stdoutTerminal } from './progress-bar.ts';

export function runMain(main: () => Promise<number | void>): void {
  // Before anything allocates: the CLIs move multi-megabyte frames (see shared/gc-tuning.ts).
  tuneGcForLargeFrames();
  main().then(
    (code) => {
      if (typeof code === 'number') process.exitCode = code;
    },
    (err: unknown) => {
      stdoutTerminal()?.clear(); // the progress bar, if one is showing, must not prefix the error
      if (err instanceof GanError) {
        process.stderr.write(`error [${err.code}]: ${err.message}\n`);
        process.exitCode = 2;
      } else {
        process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
        process.exitCode = 1;
      }
    },
  );
}
