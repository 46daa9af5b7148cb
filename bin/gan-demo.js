#!/usr/bin/env node
// npm start. TypeScript is run through tsx's loader, so there is no build step to go stale.
import { register } from 'tsx/esm/api';
register();
await import('../coordinator/demo.ts');
