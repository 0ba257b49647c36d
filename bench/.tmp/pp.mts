import { PGlite, protocol } from '@electric-sql/pglite';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os'; import path from 'node:path';
const dir = await mkdtemp(path.join(os.tmpdir(), 'agentvm-mb-'));
const pg = new PGlite(dir, { postgresqlconf: ['shared_buffers=8MB'] } as any);
await pg.exec('create table t (seq bigint primary key, at timestamptz not null, profile text, action text not null, decision text not null, reason text, subject text, data jsonb, prev_hash text not null, hash text not null)');
const S = protocol.serialize;
const text = 'insert into t (seq, at, profile, action, decision, reason, subject, data, prev_hash, hash) values ($1::bigint, $2::timestamptz, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)';
await (pg as any)._runExclusiveQuery(async () => { await pg.execProtocol(S.parse({ name: 'audit_ins', text, types: [] }), { syncToFs: false }); await pg.execProtocol(S.sync(), { syncToFs: false }); });
let seq = 0;
const vals = () => [String(++seq), new Date().toISOString(), 'p', 'tool.call', 'allow', null, 'srv.echo', JSON.stringify({ session: 'bench', turn: null, policyHash: 'a'.repeat(64), argsHash: 'b'.repeat(64) }), 'c'.repeat(64), 'd'.repeat(64)];
const viaQuery = () => pg.query(text, vals());
function concat(parts: Uint8Array[]) { const n = parts.reduce((a, p) => a + p.length, 0); const out = new Uint8Array(n); let o = 0; for (const p of parts) { out.set(p, o); o += p.length; } return out; }
const viaPrepared = () => (pg as any)._runExclusiveQuery(async () => {
  const r = await pg.execProtocol(concat([S.bind({ statement: 'audit_ins', values: vals() }), S.execute({}), S.sync()]), { syncToFs: false });
  await pg.syncToFs();
  return r;
});
const r0 = await viaPrepared(); console.log(r0.messages.map((m: any) => m.name).join(','));
const junk = Array.from({ length: 3000 }, (_, i) => ({ i, s: 'x'.repeat(50), n: [1, 2, 3] }));
for (const thrash of [0, 1]) for (const [k, f] of [['query', viaQuery], ['prepared', viaPrepared]] as const) {
  const v: number[] = [];
  for (let i = 0; i < 1200; i++) { for (let j = 0; j < thrash; j++) JSON.parse(JSON.stringify(junk)); const s = performance.now(); await f(); v.push(performance.now() - s); }
  v.splice(0, 200); v.sort((a, b) => a - b); console.log('thrash', thrash, k.padEnd(9), 'p50', v[500]!.toFixed(3), 'p90', v[900]!.toFixed(3));
}
console.log((await pg.query('select count(*) from t')).rows);
await pg.close();
