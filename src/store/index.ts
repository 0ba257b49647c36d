import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { asc, eq, sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { AgentVmError } from '../errors.js';
import type { Logger } from '../log.js';
import { approvalRepo, type ApprovalRepo } from './approvals.js';
import { auditRepo, type AuditRepo } from './audit.js';
import { eventRepo, type EventRepo } from './events.js';
import { gatewayRepo, type GatewayRepo } from './gateway.js';
import { leaseRepo, type LeaseRepo } from './leases.js';
import { sessionRepo, type SessionRepo } from './sessions.js';
import { transcriptRepo, type TranscriptRepo } from './transcripts.js';
import { webhookRepo, type WebhookRepo } from './webhooks.js';
import { pinRepo, type PinRepo } from './pins.js';
import { jobRepo, type JobRepo } from './jobs.js';
import { scheduleRunRepo, type ScheduleRunRepo } from './schedules.js';
import { threadRepo, type ThreadRepo } from './threads.js';
import { feedbackRepo, type FeedbackRepo } from './feedback.js';
import { rawQuery, type RawQuery } from './raw.js';
import { preparedQuery } from './pglite-prepared.js';
import { agentRuntimes, agentStates, agents } from './schema.js';

export { agents };

const schema = { agents };

/** The drizzle database both drivers satisfy; code outside this module only ever sees this. */
export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;

export type AgentRow = typeof agents.$inferSelect;
export type AgentRuntime = (typeof agentRuntimes)[number];
export type AgentState = (typeof agentStates)[number];

export interface AgentWake {
  id: string;
  /** Omit to keep the profile already stored for this agent. */
  profile?: string | null;
  runtime: AgentRuntime;
  engineRuntime: string;
  image: string;
  specHash: string;
  containerId: string | null;
  wakeMs: number;
}

export interface AgentRepo {
  /** Records a successful wake: inserts the agent or updates it, and marks it running. */
  upsertAwake(r: AgentWake): Promise<AgentRow>;
  /** Returns false when no such agent is stored. */
  markSleeping(id: string): Promise<boolean>;
  /** Returns false when no such agent is stored. */
  markDestroyed(id: string): Promise<boolean>;
  get(id: string): Promise<AgentRow | undefined>;
  /** All agents, ordered by id. */
  list(): Promise<AgentRow[]>;
}

export interface Store {
  kind: 'postgres' | 'pglite';
  db: Db;
  migrate(): Promise<void>;
  /** Idempotent; every cleanup step runs even if an earlier one fails. */
  close(): Promise<void>;
  agents: AgentRepo;
  gateway: GatewayRepo;
  /** The hash-chained audit trail's rows (the chain itself is governance/audit.ts). */
  audit: AuditRepo;
  /** Tool calls waiting for a person. */
  approvals: ApprovalRepo;
  /** Pinned tool definitions and quarantined changes. */
  pins: PinRepo;
  events: EventRepo;
  transcripts: TranscriptRepo;
  sessions: SessionRepo;
  webhooks: WebhookRepo;
  /** Who serves a profile (fenced leases; gateway/lease.ts). */
  leases: LeaseRepo;
  /** Tier-2 jobs and their teardown (src/jobs). */
  jobs: JobRepo;
  /** Schedule ticks that fired (src/schedules). */
  scheduleRuns: ScheduleRunRepo;
  /** How far agents have read platform threads (adapters' thread context). */
  threads: ThreadRepo;
  /** People's ratings of answers (feedback buttons), for operators. */
  feedback: FeedbackRepo;
}

export interface OpenStoreOptions {
  /** A postgres:// URL; when absent an embedded PGlite database under `dataDir` is used. */
  databaseUrl?: string;
  dataDir: string;
  logger?: Logger;
}

// Two levels up from both src/store/index.ts (tsx) and dist/store/index.js (tsc output).
export const migrationsFolder = fileURLToPath(new URL('../../migrations', import.meta.url));

export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  const log = opts.logger?.child({ component: 'store' });
  const opened = opts.databaseUrl ? await openPostgres(opts.databaseUrl) : await openPglite(opts.dataDir, log);
  log?.info({ kind: opened.kind, target: opened.target }, 'store opened');

  let closing: Promise<void> | undefined;
  return {
    kind: opened.kind,
    db: opened.db,
    agents: agentRepo(opened.db),
    gateway: gatewayRepo(opened.db, opened.raw),
    audit: auditRepo(opened.db, { raw: opened.auditRaw ?? opened.raw }),
    approvals: approvalRepo(opened.db),
    pins: pinRepo(opened.db),
    events: eventRepo(opened.db, opened.raw),
    transcripts: transcriptRepo(opened.db),
    sessions: sessionRepo(opened.db),
    webhooks: webhookRepo(opened.db),
    leases: leaseRepo(opened.db),
    jobs: jobRepo(opened.db),
    scheduleRuns: scheduleRunRepo(opened.db),
    threads: threadRepo(opened.db),
    feedback: feedbackRepo(opened.db),
    async migrate() {
      const started = Date.now();
      await opened.migrate();
      log?.info({ kind: opened.kind, ms: Date.now() - started }, 'migrations applied');
    },
    close() {
      if (closing) return closing.catch(() => {});
      closing = runAll(opened.cleanup).then(() => log?.debug({ kind: opened.kind }, 'store closed'));
      return closing;
    },
  };
}

interface Opened {
  kind: Store['kind'];
  /** Where the data lives, safe to log and show. */
  target: string;
  db: Db;
  /** The client for the hot paths (raw.ts): prepared statements on both databases. */
  raw: RawQuery;
  /** PostgreSQL: the audit chain's own connection (see openPostgres); else the audit uses `raw`. */
  auditRaw?: RawQuery;
  migrate(): Promise<void>;
  cleanup: Array<() => Promise<void>>;
}

async function openPostgres(url: string): Promise<Opened> {
  const target = redactUrl(url);
  const secrets = passwordsIn(url);
  let client: postgres.Sql | undefined;
  // application_name lets an operator (and the tests) tell agent-vm's backends apart.
  const options = { onnotice: () => {}, connect_timeout: 10, backoff: reconnectDelaySeconds, connection: { application_name: 'agent-vm' } };
  try {
    client = postgres(url, { ...options, max: 5 });
    // postgres.js connects lazily; probe now so a bad URL fails at startup, not on first use.
    await client`select 1`;
  } catch (cause) {
    await client?.end({ timeout: 0 }).catch(() => {});
    throw new AgentVmError(
      'db_unreachable',
      `cannot reach the database at ${target}: ${scrub(reasonOf(cause), secrets)}`,
      { status: 503, cause },
    );
  }
  const sqlClient = client;
  const db = drizzlePostgres({ client: sqlClient, schema });
  // The audit chain's appends are one at a time in this process (store/audit.ts), so they get a
  // connection of their own: always the same backend, warm, instead of whichever of the pool's
  // five was idle longest (postgres.js hands out the least recently used), and never queued
  // behind a slow statement of the pool. Measured on this project's machines: 0.03 ms of a
  // 0.4 ms append. It connects on first use; drizzle sets its type parsers on it, as on the pool.
  const auditClient = postgres(url, { ...options, max: 1 });
  drizzlePostgres({ client: auditClient, schema });
  const prepared = (c: postgres.Sql) =>
    <T>(text: string, params: unknown[]) => c.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true }) as unknown as Promise<T[]>;
  return {
    kind: 'postgres',
    target,
    db,
    // The same client and type parsers drizzle uses (it set them on the client), prepared per connection.
    raw: rawQuery(prepared(sqlClient), false),
    auditRaw: rawQuery(prepared(auditClient), false),
    migrate: () => migratePostgres(db, { migrationsFolder }),
    cleanup: [() => sqlClient.end({ timeout: 5 }), () => auditClient.end({ timeout: 5 })],
  };
}

/**
 * Seconds postgres.js waits before reconnecting after `failures` failed attempts in a row (counted
 * across the pool until a connection succeeds). Its default grows as 3^n / 100 up to 20 s, so a
 * blip of a few seconds that failed a dozen attempts left the gateway waiting up to 20 s after
 * the database was back (seen: the first request after an outage answered 503). This one doubles
 * from 50 ms and stays at 1 s: a database that comes back is used within a second, and a pool of
 * five tries at most five connections a second while it is down.
 */
export function reconnectDelaySeconds(failures: number): number {
  return Math.min(0.05 * 2 ** failures, 1) * (0.5 + Math.random() / 2);
}

/**
 * Embedded server settings. shared_buffers: PostgreSQL's default (128 MB) is touched as pages are
 * read and stays resident in the WebAssembly heap (idle `agent-vm up` ~390 MB). The gateway's
 * working set is a few MB and the files stay in the OS page cache, so 8 MB is plenty.
 */
const PGLITE_CONF = ['shared_buffers=8MB'];

/**
 * Creates a new embedded database on `dir` in a short-lived child process: initdb, then the
 * migrations. Both touch far more WebAssembly heap than the gateway's own work (initdb ~500 MB,
 * the migrations ~60 MB), which would otherwise stay in this process's RSS for as long as it
 * runs. Falls back to doing it here (it only costs memory): whatever the child left is cleared,
 * and why the child failed is returned.
 */
async function createPgliteApart(dir: string): Promise<string | undefined> {
  const script = [
    'const [pgliteUrl, drizzleUrl, migratorUrl, dir, conf, folder] = process.argv.slice(1);',
    'const { PGlite } = await import(pgliteUrl);',
    'const { drizzle } = await import(drizzleUrl);',
    'const { migrate } = await import(migratorUrl);',
    'const pg = new PGlite(dir, { postgresqlconf: JSON.parse(conf) });',
    'await pg.waitReady;',
    'await migrate(drizzle({ client: pg }), { migrationsFolder: folder });',
    'await pg.close();',
  ].join(' ');
  // Resolved from here, so the child loads the very packages this process uses (their CommonJS
  // builds: `import.meta.resolve` is not available under every loader).
  const resolve = (specifier: string) => pathToFileURL(createRequire(import.meta.url).resolve(specifier)).href;
  const args = [
    resolve('@electric-sql/pglite'),
    resolve('drizzle-orm/pglite'),
    resolve('drizzle-orm/pglite/migrator'),
    dir,
    JSON.stringify(PGLITE_CONF),
    migrationsFolder,
  ];
  const failure = await new Promise<string | undefined>((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    child.once('error', (err) => resolve(err.message));
    child.once('close', (code, signal) => resolve(code === 0 ? undefined : `exit ${code ?? signal}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
  });
  if (failure !== undefined) {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
  }
  return failure;
}

async function openPglite(dataDir: string, log: Logger | undefined): Promise<Opened> {
  const dir = path.join(dataDir, 'pglite');
  let client: PGlite | undefined;
  await mkdir(dir, { recursive: true });
  const releaseDirLock = await lockDataDir(dir);
  try {
    // A new directory is created and migrated in a child process (createPgliteApart says why);
    // the migrate() that follows finds nothing left to apply.
    if (!existsSync(path.join(dir, 'PG_VERSION'))) {
      const failure = await createPgliteApart(dir);
      if (failure) log?.warn({ dir, failure }, 'creating the embedded database in a child process failed; creating it here (costs memory until restart)');
    }
    client = new PGlite(dir, { postgresqlconf: PGLITE_CONF });
    await client.waitReady;
  } catch (cause) {
    await client?.close().catch(() => {});
    await releaseDirLock();
    throw new AgentVmError('db_unreachable', `cannot open the embedded database at ${dir}: ${reasonOf(cause)}`, {
      status: 503,
      cause,
    });
  }
  const pg = client;
  const db = drizzlePglite({ client: pg, schema });
  return {
    kind: 'pglite',
    target: dir,
    db,
    raw: preparedQuery(pg),
    migrate: () => migratePglite(db, { migrationsFolder }),
    cleanup: [() => pg.close().finally(releaseDirLock)],
  };
}

/**
 * PGlite is a single-process database: a second process opening the same directory would
 * corrupt it. A pid file refuses that with a clear message; a stale one (dead pid) is taken over.
 */
async function lockDataDir(dir: string): Promise<() => Promise<void>> {
  const file = `${dir}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      let done = false;
      return async () => {
        if (done) return;
        done = true;
        await rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (pid === process.pid) {
        throw new AgentVmError('db_in_use', `the embedded database at ${dir} is already open in this process`, { status: 409 });
      }
      if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
        throw new AgentVmError(
          'db_in_use',
          `the embedded database at ${dir} is in use by another agent-vm process (pid ${pid}); ` +
            'talk to it over HTTP (agent-vm send --server), stop it, or set DATABASE_URL so processes can share a database',
          { status: 409 },
        );
      }
      await rm(file, { force: true });
    }
  }
  throw new AgentVmError('db_in_use', `cannot lock the embedded database at ${dir}`, { status: 409 });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function agentRepo(db: Db): AgentRepo {
  const setState = async (id: string, state: AgentState): Promise<boolean> => {
    const rows = await db
      .update(agents)
      .set({ state, updatedAt: sql`now()` })
      .where(eq(agents.id, id))
      .returning({ id: agents.id });
    return rows.length > 0;
  };

  return {
    async upsertAwake(r) {
      const fields = {
        runtime: r.runtime,
        engineRuntime: r.engineRuntime,
        image: r.image,
        specHash: r.specHash,
        containerId: r.containerId,
        state: 'running' as const,
        // Timings usually come from performance.now(); an integer column rejects fractions.
        lastWakeMs: Math.round(r.wakeMs),
        lastWakeAt: sql`now()`,
        updatedAt: sql`now()`,
      };
      const [row] = await db
        .insert(agents)
        .values({ id: r.id, profile: r.profile ?? null, ...fields })
        .onConflictDoUpdate({
          target: agents.id,
          set: r.profile === undefined ? fields : { ...fields, profile: r.profile },
        })
        .returning();
      if (!row) throw new Error(`upsert of agent ${r.id} returned no row`);
      return row;
    },
    markSleeping: (id) => setState(id, 'sleeping'),
    markDestroyed: (id) => setState(id, 'destroyed'),
    async get(id) {
      const [row] = await db.select().from(agents).where(eq(agents.id, id));
      return row;
    },
    list: () => db.select().from(agents).orderBy(asc(agents.id)),
  };
}

async function runAll(steps: Array<() => Promise<void>>): Promise<void> {
  const results = await Promise.allSettled(steps.map((step) => step()));
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, 'closing the store failed');
}

/** The URL with any password replaced, fit for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return '<unparseable database url>';
  }
}

function passwordsIn(url: string): string[] {
  try {
    const u = new URL(url);
    const raw = [u.password, u.searchParams.get('password') ?? ''];
    return [...new Set([...raw, ...raw.map(safeDecode)])].filter((s) => s.length > 0);
  } catch {
    return [];
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function scrub(text: string, secrets: string[]): string {
  return secrets.reduce((t, s) => t.split(s).join('***'), text);
}

// Node's happy-eyeballs connect rejects with an AggregateError whose own message is empty.
function reasonOf(err: unknown): string {
  if (err instanceof AggregateError && !err.message) {
    const inner = err.errors.map((e) => reasonOf(e)).filter(Boolean);
    if (inner.length > 0) return [...new Set(inner)].join('; ');
  }
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return err.message || (typeof code === 'string' ? code : err.name);
  }
  return String(err);
}
