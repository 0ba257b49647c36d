import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainResolvers, createSecretResolver, envNameOf, SecretNotFound, substituteSecrets, type SecretResolver } from './secrets.js';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'agentvm-secrets-'));
});
afterAll(() => fs.rm(dir, { recursive: true, force: true }));

const write = async (name: string, text: string) => {
  const f = path.join(dir, name);
  await fs.writeFile(f, text, { mode: 0o600 });
  return f;
};

const failure = (p: Promise<unknown>) => p.then(() => new Error('expected a failure') as Error & { code?: string }, (e: unknown) => e as Error & { code?: string });

describe('secret resolver', () => {
  it('reads the environment first, then a YAML or JSON file', async () => {
    const yamlFile = await write('s.yaml', 'github-token: from-file\nonly-file: "file value"\n');
    const r = createSecretResolver({ env: { GITHUB_TOKEN: 'from-env' }, file: yamlFile });
    expect(await r.resolve('github-token')).toBe('from-env');
    expect(await r.resolve('only-file')).toBe('file value');
    const jsonFile = await write('s.json', JSON.stringify({ a: 'json-a' }));
    expect(await createSecretResolver({ env: {}, file: jsonFile }).resolve('a')).toBe('json-a');
    expect(envNameOf('github-token.v2')).toBe('GITHUB_TOKEN_V2');
  });

  it('names the secret, never a value, when it cannot resolve', async () => {
    const file = await write('t.yaml', 'n: 12345\nother: hunter2-value\n');
    const r = createSecretResolver({ env: { X: 'env-value' }, file });
    const e = await failure(r.resolve('missing'));
    expect(e.code).toBe('secret_unresolved');
    expect(e.message).toBe(`secret "missing" cannot be resolved: not found in the environment (AGENTVM_SECRET_MISSING) or the secrets file ${file}`);
    expect((await failure(r.resolve('n'))).message).toBe(`secret "n" cannot be resolved: its value in ${file} is not a non-empty string`);
    expect((await failure(r.resolve('n'))).message).not.toContain('12345');
  });

  it('fails every lookup closed when the file is missing, unreadable or malformed', async () => {
    const missing = path.join(dir, 'nope.yaml');
    const r = createSecretResolver({ env: { X: 'env-value' }, file: missing });
    const e = await failure(r.resolve('X'));
    expect(e.code).toBe('secret_unresolved');
    expect(e.message).toBe(`secret "X" cannot be resolved: secrets file ${missing} is unreadable (ENOENT)`);
    const bad = await write('bad.yaml', 'key: [unclosed super-secret-content\n');
    const e2 = await failure(createSecretResolver({ env: {}, file: bad }).resolve('key'));
    expect(e2.message).toBe(`secret "key" cannot be resolved: secrets file ${bad} is not valid JSON or YAML`);
    expect(e2.message).not.toContain('super-secret');
    const list = await write('list.yaml', '- a\n- b\n');
    expect((await failure(createSecretResolver({ env: {}, file: list }).resolve('a'))).message).toMatch(/must map secret names to values/);
  });

  it('picks up a rotated file', async () => {
    const file = await write('rot.yaml', 'k: one\n');
    const r = createSecretResolver({ env: {}, file });
    expect(await r.resolve('k')).toBe('one');
    await new Promise((res) => setTimeout(res, 20));
    await fs.writeFile(file, 'k: two\n');
    const later = new Date(Date.now() + 5000);
    await fs.utimes(file, later, later);
    expect(await r.resolve('k')).toBe('two');
  });

  it('chains pluggable resolvers; a broken link stops the chain (fail closed)', async () => {
    const vault: SecretResolver = {
      async resolve(name) {
        if (name === 'v') return 'vault-value';
        if (name === 'down') throw new Error('vault sealed');
        throw new SecretNotFound(name, 'vault');
      },
    };
    const fallback: SecretResolver = { resolve: async () => 'fallback' };
    const r = chainResolvers([vault, fallback]);
    expect(await r.resolve('v')).toBe('vault-value');
    expect(await r.resolve('other')).toBe('fallback');
    expect((await failure(r.resolve('down'))).message).toBe('secret "down" cannot be resolved: the secret store failed (Error)');
    expect(await createSecretResolver({ env: { A: 'aaaa' } }).known!()).toEqual([{ name: 'A', value: 'aaaa' }]);
  });

  it('substitutes secret:// references through the manifest aliases', async () => {
    const r = createSecretResolver({ env: { STORE_NAME: 's3cr3t' } });
    expect(await substituteSecrets('Bearer secret://gh and secret://gh', { gh: 'secret://STORE_NAME' }, r)).toEqual({
      value: 'Bearer s3cr3t and s3cr3t',
      used: [{ name: 'STORE_NAME', value: 's3cr3t' }, { name: 'STORE_NAME', value: 's3cr3t' }],
    });
    expect((await failure(substituteSecrets('secret://undeclared', {}, r))).message).toMatch(/secret "undeclared" cannot be resolved: it is not declared/);
  });
});

describe('checkProfileSecrets', () => {
  it('reports each unresolvable secret by name, for profiles validate', async () => {
    const { checkProfileSecrets } = await import('./secrets.js');
    const r = createSecretResolver({ env: { OK: 'value' } });
    expect(await checkProfileSecrets({ secrets: { a: 'secret://OK', b: 'secret://GONE' } }, r, 'p.yaml')).toEqual([
      { file: 'p.yaml', path: 'secrets.b', message: 'secret "GONE" cannot be resolved: not found in the environment (AGENTVM_SECRET_GONE); tool servers using it will not start' },
    ]);
  });
});
