/**
 * One migrated embedded database for the whole unit project: the unit project's global setup
 * creates it once (initdb + migrations, ~4 s on a busy 2-core machine), and each fake gateway
 * starts from a copy of it (~0.1 s) instead of its own initdb. A test whose project provides no
 * template (the integration project) opens a fresh database as before.
 */
import { cpSync, existsSync } from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';
import { openStore } from '../../src/store/index.js';
import { tempDir } from './env.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgliteTemplate?: string;
  }
}

/** Creates the template: a data directory with a migrated, cleanly closed PGlite database. */
export async function makePgliteTemplate(): Promise<string> {
  const dataDir = tempDir('pglite-template');
  const store = await openStore({ dataDir });
  await store.migrate();
  await store.close();
  return dataDir;
}

/** Seeds `dataDir` with a copy of the template when the project provides one and `dataDir` has no database yet. */
export function seedFromTemplate(dataDir: string): void {
  const template = inject('pgliteTemplate');
  const target = path.join(dataDir, 'pglite');
  if (!template || existsSync(target)) return;
  cpSync(path.join(template, 'pglite'), target, { recursive: true });
}
