import { randomBytes } from 'node:crypto';
import postgres from 'postgres';

const adminUrl = process.env.AGENTVM_TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/**
 * Creates a throwaway database on the test PostgreSQL server. An unreachable server is an
 * error, never a skip: the Postgres backend is part of what the tests must prove.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `agentvm_t_${randomBytes(6).toString('hex')}`;
  await withAdmin((sql) => sql`create database ${sql(name)}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    url: url.toString(),
    async drop() {
      if (dropped) return;
      dropped = true;
      await withAdmin((sql) => sql`drop database if exists ${sql(name)} with (force)`);
    },
  };
}

async function withAdmin(fn: (sql: postgres.Sql) => Promise<unknown>): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    await fn(sql);
  } catch (err) {
    const safe = new URL(adminUrl);
    if (safe.password) safe.password = '***';
    const reason = err instanceof Error ? err.message || String((err as { code?: unknown }).code) : String(err);
    throw new Error(
      `test PostgreSQL at ${safe.toString()} failed (${reason}); start it or set AGENTVM_TEST_PG_ADMIN_URL`,
      { cause: err },
    );
  } finally {
    await sql.end({ timeout: 5 });
  }
}
