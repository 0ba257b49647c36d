/**
 * The embedded database's hot statements as named prepared statements (raw.ts says which).
 *
 * PGlite's `query()` runs every statement as six protocol exchanges with the WebAssembly backend
 * (parse, describe, bind, describe, execute, sync), parsing and planning it each time. Here a
 * constant text is parsed and described once, under a name; each run is then one exchange (bind,
 * execute, sync). Measured on this project's 2-vCPU machine, a one-row audit insert: 0.21 → 0.08
 * ms p50, and 0.53 → 0.19 ms when the caches are cold from other work in the process (the MCP
 * proxy's path) — the WebAssembly heap a statement walks is what costs.
 *
 * It runs under PGlite's own exclusive sections, as `query()` does, so it never interleaves with
 * another statement or lands inside someone's transaction, and it writes the data directory out
 * after a successful run as `query()` does. Values are serialized and rows parsed with the
 * client's own serializers and parsers (by the types the backend described), so results are what
 * `query()` would return.
 *
 * Left out: statements not seen before once `MAX_PREPARED` are held run through `query()`; a
 * statement that fails is forgotten (prepared again next time), so a plan invalidated by a
 * migration cannot stick.
 */
import { protocol, type PGlite } from '@electric-sql/pglite';
import { rawQuery, type RawQuery } from './raw.js';

const MAX_PREPARED = 256;

interface Prepared {
  name: string;
  paramTypes: number[];
  fields: Array<{ name: string; type: number }>;
}

/** The PGlite methods `query()` itself runs under (public in PGlite's types, `_`-named). */
type Exclusive = Pick<PGlite, '_checkReady' | '_runExclusiveTransaction' | '_runExclusiveQuery'>;

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function preparedQuery(pg: PGlite): RawQuery {
  const { serialize } = protocol;
  const prepared = new Map<string, Prepared>();
  let counter = 0;
  const ex = pg as unknown as Exclusive;

  /** Parses and describes `text` under a new name; inside the exclusive section. */
  async function prepare(text: string): Promise<Prepared> {
    const name = `agentvm_${++counter}`;
    const r = await pg.execProtocol(concat([serialize.parse({ name, text, types: [] }), serialize.describe({ type: 'S', name }), serialize.sync()]), { syncToFs: false });
    let paramTypes: number[] = [];
    let fields: Prepared['fields'] = [];
    for (const m of r.messages as Array<{ name: string; dataTypeIDs?: number[]; fields?: Array<{ name: string; dataTypeID: number }> }>) {
      if (m.name === 'parameterDescription') paramTypes = m.dataTypeIDs ?? [];
      if (m.name === 'rowDescription') fields = (m.fields ?? []).map((f) => ({ name: f.name, type: f.dataTypeID }));
    }
    return { name, paramTypes, fields };
  }

  return rawQuery(async <T>(text: string, params: unknown[]): Promise<T[]> => {
    if (!prepared.has(text) && prepared.size >= MAX_PREPARED) return (await pg.query<T>(text, params)).rows;
    await ex._checkReady();
    return ex._runExclusiveTransaction(() =>
      ex._runExclusiveQuery(async () => {
        let st = prepared.get(text);
        if (!st) {
          st = await prepare(text);
          prepared.set(text, st);
        }
        const values = params.map((v, i) => {
          if (v === null || v === undefined) return null;
          const ser = pg.serializers[st.paramTypes[i] ?? 0];
          return ser ? ser(v) : String(v);
        });
        let messages: Array<{ name: string; fields?: Array<string | null> }>;
        try {
          const r = await pg.execProtocol(concat([serialize.bind({ statement: st.name, values }), serialize.execute({}), serialize.sync()]), { syncToFs: false });
          messages = r.messages as typeof messages;
        } catch (err) {
          prepared.delete(text);
          throw err;
        }
        await pg.syncToFs();
        const rows: T[] = [];
        for (const m of messages) {
          if (m.name !== 'dataRow' || !m.fields) continue;
          const row: Record<string, unknown> = {};
          st.fields.forEach((f, i) => {
            const v = m.fields![i] ?? null;
            const parse = pg.parsers[f.type];
            row[f.name] = v === null ? null : parse ? parse(v, f.type) : v;
          });
          rows.push(row as T);
        }
        return rows;
      }),
    );
  }, true);
}
