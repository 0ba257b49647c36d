/**
 * Secrets by reference. Manifests name secrets as `secret://<name>`; only the gateway resolves
 * them, and only to use them itself (upstream MCP connections, later the egress relay). A value
 * never enters an agent's sandbox.
 *
 * Resolution is a chain of resolvers, first answer wins: environment (AGENTVM_SECRET_<NAME>),
 * then a secrets file (JSON or YAML, name → value). Vault or a cloud secret manager is one more
 * `SecretResolver` in the chain (`chainResolvers`).
 *
 * Fails closed: a name nobody knows, a configured file that is missing, unreadable or malformed,
 * a non-string value: every one is an AgentVmError `secret_unresolved` whose message names the
 * secret and the reason, never a value.
 *
 * Deliberately left out: caching beyond the file's mtime, and writing secrets anywhere.
 */
import fs from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { AgentVmError } from '../errors.js';
import type { Logger } from '../log.js';

export interface NamedSecret {
  name: string;
  value: string;
}

export interface SecretResolver {
  /** The value of secret `name`. Throws AgentVmError('secret_unresolved') naming the secret, never the value. */
  resolve(name: string): Promise<string>;
  /**
   * Every secret this resolver can list, for redaction of outgoing replies and files. Backends
   * that cannot enumerate (Vault) leave it out; the MCP proxy adds what it resolved itself.
   */
  known?(): Promise<NamedSecret[]>;
}

/** Thrown by a link of the chain that does not have the secret, so the next one is asked. */
export class SecretNotFound extends Error {
  constructor(readonly secret: string, readonly where: string) {
    super(`secret "${secret}" is not in ${where}`);
    this.name = 'SecretNotFound';
  }
}

export function unresolved(name: string, reason: string, cause?: unknown): AgentVmError {
  return new AgentVmError('secret_unresolved', `secret "${name}" cannot be resolved: ${reason}`, {
    status: 400,
    ...(cause === undefined ? {} : { cause }),
  });
}

/** `github-token` → `GITHUB_TOKEN`: how a manifest name maps to an environment variable name. */
export function envNameOf(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
}

/**
 * Secrets from the environment, already stripped of the AGENTVM_SECRET_ prefix (Config.secrets.env).
 * A lookup tries the name as written, then its environment form (`github-token` → `GITHUB_TOKEN`).
 */
export function envSecretResolver(env: Record<string, string>): SecretResolver {
  const get = (name: string): string | undefined => {
    const v = Object.prototype.hasOwnProperty.call(env, name) ? env[name] : env[envNameOf(name)];
    return v === undefined || v === '' ? undefined : v;
  };
  return {
    async resolve(name) {
      const v = get(name);
      if (v === undefined) throw new SecretNotFound(name, `the environment (AGENTVM_SECRET_${envNameOf(name)})`);
      return v;
    },
    async known() {
      return Object.entries(env)
        .filter(([, v]) => v !== '')
        .map(([name, value]) => ({ name, value }));
    },
  };
}

/**
 * Secrets from a JSON or YAML file mapping names to string values. Re-read when its mtime
 * changes, so a rotated secret is picked up. If the file is missing, unreadable or malformed,
 * every lookup through this resolver fails (a half-working secrets file is a misconfiguration).
 */
export function fileSecretResolver(file: string, logger?: Logger): SecretResolver {
  let cache: { mtimeMs: number; values: Map<string, unknown> } | undefined;

  async function load(): Promise<Map<string, unknown>> {
    let st;
    try {
      st = await fs.stat(file);
    } catch (err) {
      throw new FileBroken(`secrets file ${file} is unreadable (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
    }
    if (cache && cache.mtimeMs === st.mtimeMs) return cache.values;
    if ((st.mode & 0o004) !== 0) logger?.warn({ file }, 'secrets file is world-readable; chmod 600 it');
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      throw new FileBroken(`secrets file ${file} is unreadable (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
    }
    let data: unknown;
    try {
      // YAML is a superset of JSON, so one parser reads both.
      data = parseYaml(text, { maxAliasCount: 0 });
    } catch {
      // The parser's message may quote the file's content; never pass it on.
      throw new FileBroken(`secrets file ${file} is not valid JSON or YAML`);
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new FileBroken(`secrets file ${file} must map secret names to values`);
    }
    const values = new Map(Object.entries(data as Record<string, unknown>));
    cache = { mtimeMs: st.mtimeMs, values };
    return values;
  }

  return {
    async resolve(name) {
      const values = await load();
      if (!values.has(name)) throw new SecretNotFound(name, `the secrets file ${file}`);
      const v = values.get(name);
      if (typeof v !== 'string' || v === '') throw unresolved(name, `its value in ${file} is not a non-empty string`);
      return v;
    },
    async known() {
      const values = await load();
      return [...values].flatMap(([name, value]) => (typeof value === 'string' && value !== '' ? [{ name, value }] : []));
    },
  };
}

class FileBroken extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'FileBroken';
  }
}

/**
 * Asks each resolver in turn; the first that has the secret wins. A resolver that fails for any
 * other reason than "not here" stops the chain: fail closed rather than fall through to a later,
 * possibly stale, source.
 */
export function chainResolvers(links: SecretResolver[]): SecretResolver {
  return {
    async resolve(name) {
      const missing: string[] = [];
      for (const link of links) {
        try {
          return await link.resolve(name);
        } catch (err) {
          if (err instanceof SecretNotFound) {
            missing.push(err.where);
            continue;
          }
          if (err instanceof AgentVmError) throw err;
          if (err instanceof FileBroken) throw unresolved(name, err.message, err);
          throw unresolved(name, `the secret store failed (${err instanceof Error ? err.name : 'error'})`, err);
        }
      }
      throw unresolved(name, missing.length > 0 ? `not found in ${missing.join(' or ')}` : 'no secret store is configured');
    },
    async known() {
      const out: NamedSecret[] = [];
      for (const link of links) {
        if (!link.known) continue;
        try {
          out.push(...(await link.known()));
        } catch {
          // A broken store lists nothing; its lookups fail on their own.
        }
      }
      return out;
    },
  };
}

export interface SecretResolverOptions {
  /** Config.secrets.env: AGENTVM_SECRET_<NAME> values, keyed by <NAME>. These win over the file. */
  env: Record<string, string>;
  /** Config.secrets.file. When set but missing or unreadable, every lookup fails closed. */
  file?: string | undefined;
  logger?: Logger;
}

/** The gateway's resolver: environment first, then the secrets file. */
export function createSecretResolver(options: SecretResolverOptions): SecretResolver {
  const env = envSecretResolver(options.env);
  if (options.file === undefined) return chainResolvers([env]);
  const file = fileSecretResolver(options.file, options.logger);
  const chain = chainResolvers([env, file]);
  return {
    async resolve(name) {
      // A configured file that cannot be read fails every lookup, the environment's included.
      try {
        await file.known?.();
      } catch (err) {
        throw unresolved(name, (err as Error).message, err);
      }
      return chain.resolve(name);
    },
    known: () => chain.known!(),
  };
}

/** `secret://` references in one header or env value, in order: the names after the prefix. */
export const SECRET_REF_IN_VALUE = /secret:\/\/([A-Za-z0-9_.-]+)/g;

/**
 * Replaces every `secret://<alias>` in `value`. `aliases` is the manifest's `secrets` map
 * (alias → `secret://<store name>`), so the store is asked for the name the alias points at.
 * Returns the value and the store names used (for audit rows, by name only).
 */
export async function substituteSecrets(
  value: string,
  aliases: Record<string, string>,
  resolver: SecretResolver,
): Promise<{ value: string; used: NamedSecret[] }> {
  const used: NamedSecret[] = [];
  let out = '';
  let last = 0;
  for (const m of value.matchAll(SECRET_REF_IN_VALUE)) {
    const alias = m[1]!;
    const target = aliases[alias];
    const storeName = target?.startsWith('secret://') ? target.slice('secret://'.length) : undefined;
    if (storeName === undefined) throw unresolved(alias, 'it is not declared in the manifest\'s secrets');
    const secret = await resolver.resolve(storeName);
    used.push({ name: storeName, value: secret });
    out += value.slice(last, m.index) + secret;
    last = m.index + m[0].length;
  }
  return { value: out + value.slice(last), used };
}

/**
 * For `agent-vm profiles validate`: one issue per declared secret that cannot be resolved right
 * now (path `secrets.<alias>`), with the reason by name only. A tool server using such a secret
 * will not start.
 */
export async function checkProfileSecrets(
  profile: { secrets: Record<string, string> },
  resolver: SecretResolver,
  file: string,
): Promise<Array<{ file: string; path: string; message: string }>> {
  const issues: Array<{ file: string; path: string; message: string }> = [];
  for (const [alias, ref] of Object.entries(profile.secrets)) {
    const name = ref.startsWith('secret://') ? ref.slice('secret://'.length) : ref;
    try {
      await resolver.resolve(name);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      issues.push({ file, path: `secrets.${alias}`, message: `${why}; tool servers using it will not start` });
    }
  }
  return issues;
}
