#!/usr/bin/env node
// The CLIs are TypeScript run through tsx's loader, so there is no build step to go stale.
import { register } from 'tsx/esm/api';
register();
// -h, --help and --version are answered from the flag table alone, before the CLI (and with it
// tfjs, a second or more) is loaded.
const { answerInfoFlags } = await import('../shared/cli.ts');
const { EVAL_CLI } = await import('../coordinator/cli-specs.ts');
if (!answerInfoFlags(EVAL_CLI, process.argv.slice(2))) await import('../trainer/eval-cli.ts');
