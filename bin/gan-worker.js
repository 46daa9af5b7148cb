#!/usr/bin/env node
// The CLIs are TypeScript run through tsx's loader, so there is no build step to go stale.
import { register } from 'tsx/esm/api';
register();
await import('../worker/cli.ts');
