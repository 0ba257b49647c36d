/**
 * Both store backends for tests that must hold on each: embedded PGlite in a temp directory, and
 * PostgreSQL on a throwaway database of the test server.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openStore, type OpenStoreOptions, type Store } from '../../src/store/index.js';
import { createTestDatabase } from './pg.js';

export interface StoreBackend {
  kind: Store['kind'];
  /** Options for `openStore` on a fresh, empty database, and how to remove that database. */
  setup(): Promise<{ opts: OpenStoreOptions; teardown(): Promise<void> }>;
  /** A migrated store on a fresh database; `close` closes it and removes the database. */
  open(): Promise<{ store: Store; close(): Promise<void> }>;
}

/** The two backends; `label` names the PGlite temp directories. */
export function storeBackends(label: string): StoreBackend[] {
  const setups: Array<Pick<StoreBackend, 'kind' | 'setup'>> = [
    {
      kind: 'pglite',
      async setup() {
        const dataDir = await mkdtemp(path.join(os.tmpdir(), `agentvm-${label}-`));
        return { opts: { dataDir }, teardown: () => rm(dataDir, { recursive: true, force: true }) };
      },
    },
    {
      kind: 'postgres',
      async setup() {
        const tdb = await createTestDatabase();
        // dataDir is unused with a databaseUrl; a path that does not exist proves nothing is written there.
        const dataDir = path.join(os.tmpdir(), `agentvm-${label}-unused`);
        return { opts: { databaseUrl: tdb.url, dataDir }, teardown: () => tdb.drop() };
      },
    },
  ];
  return setups.map((b) => ({
    ...b,
    async open() {
      const { opts, teardown } = await b.setup();
      const store = await openStore(opts);
      const close = async () => {
        await store.close();
        await teardown();
      };
      try {
        await store.migrate();
      } catch (err) {
        await close();
        throw err;
      }
      return { store, close };
    },
  }));
}
