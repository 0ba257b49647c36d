import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseDockerHost } from './config.js';
import { AgentVmError } from './errors.js';

/** Runs loadConfig expecting it to throw, and returns the AgentVmError it threw. */
function configError(env: Record<string, string>): AgentVmError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(AgentVmError);
    const e = err as AgentVmError;
    expect(e.code).toBe('config_invalid');
    return e;
  }
  throw new Error(`expected loadConfig to reject ${JSON.stringify(env)}`);
}

describe('loadConfig defaults', () => {
  it('takes the documented defaults from an empty environment', () => {
    const c = loadConfig({});
    expect(c.dataDir).toBe(path.resolve('./.agent-vm'));
    expect(path.isAbsolute(c.dataDir)).toBe(true);
    expect(c.profilesDir).toBe(path.resolve('./profiles'));
    expect(c.databaseUrl).toBeUndefined();
    expect(c.redisUrl).toBeUndefined();
    expect(c.runtime).toBe('auto');
    expect(c.allowRunc).toBe(false);
    expect(c.docker).toEqual({ socketPath: '/var/run/docker.sock' });
    expect(c.image).toBe('agent-vm/agent:latest');
    expect(c.http).toEqual({ host: '127.0.0.1', port: 8787 });
    expect(c.logLevel).toBe('info');
    expect(c.outbox).toEqual({ maxFileBytes: 25 * 1024 * 1024, maxTotalBytes: 100 * 1024 * 1024, maxFiles: 20 });
    expect(c.slack).toEqual({
      signingSecret: undefined,
      botToken: undefined,
      appToken: undefined,
      apiUrl: 'https://slack.com/api/',
    });
    expect(c.discord).toEqual({
      publicKey: undefined,
      botToken: undefined,
      applicationId: undefined,
      apiUrl: 'https://discord.com/api',
    });
    expect(c.clickup).toEqual({ webhookSecret: undefined, token: undefined, apiUrl: 'https://api.clickup.com/api/v2', progressAfterSeconds: 60 });
  });

  it('treats empty strings as unset', () => {
    const empty = {
      AGENTVM_DATA_DIR: '',
      DATABASE_URL: '',
      REDIS_URL: '',
      DOCKER_HOST: '',
      AGENTVM_RUNTIME: '',
      AGENTVM_ALLOW_RUNC: '',
      AGENTVM_PORT: '',
      AGENTVM_LOG_LEVEL: '',
      AGENTVM_OUTBOX_MAX_FILES: '',
      SLACK_SIGNING_SECRET: '',
      SLACK_API_URL: '',
      DISCORD_PUBLIC_KEY: '',
      DISCORD_APPLICATION_ID: '',
      CLICKUP_TOKEN: '',
    };
    expect(loadConfig(empty)).toEqual(loadConfig({}));
  });

  it('ignores variables it does not know', () => {
    expect(loadConfig({ PATH: '/usr/bin', AGENTVM_SOMETHING_ELSE: 'x' })).toEqual(loadConfig({}));
  });

  it('reads the values it is given', () => {
    const key = 'ab'.repeat(32);
    const c = loadConfig({
      AGENTVM_DATA_DIR: '/srv/agent-vm',
      DATABASE_URL: 'postgres://u@db:5432/agentvm',
      REDIS_URL: 'rediss://cache:6380',
      AGENTVM_RUNTIME: 'runsc',
      AGENTVM_PORT: '9000',
      AGENTVM_HOST: '0.0.0.0',
      AGENTVM_LOG_LEVEL: 'silent',
      AGENTVM_OUTBOX_MAX_FILES: '3',
      DISCORD_PUBLIC_KEY: key,
      DISCORD_APPLICATION_ID: '1234567890',
      SLACK_API_URL: 'http://127.0.0.1:9999/api/',
    });
    expect(c.dataDir).toBe('/srv/agent-vm');
    expect(c.databaseUrl).toBe('postgres://u@db:5432/agentvm');
    expect(c.redisUrl).toBe('rediss://cache:6380');
    expect(c.runtime).toBe('runsc');
    expect(c.http).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(c.logLevel).toBe('silent');
    expect(c.outbox.maxFiles).toBe(3);
    expect(c.discord.publicKey).toBe(key);
    expect(c.discord.applicationId).toBe('1234567890');
    expect(c.slack.apiUrl).toBe('http://127.0.0.1:9999/api/');
  });

  it('accepts the boolean spellings of AGENTVM_ALLOW_RUNC', () => {
    for (const v of ['1', 'true', 'yes']) expect(loadConfig({ AGENTVM_ALLOW_RUNC: v }).allowRunc).toBe(true);
    for (const v of ['0', 'false', 'no']) expect(loadConfig({ AGENTVM_ALLOW_RUNC: v }).allowRunc).toBe(false);
  });
});

describe('loadConfig rejects wrong values, naming the setting', () => {
  const cases: Array<[string, string]> = [
    ['AGENTVM_RUNTIME', 'firecracker'],
    ['AGENTVM_PORT', '99999'],
    ['AGENTVM_PORT', 'eighty'],
    ['DATABASE_URL', 'mysql://x'],
    ['REDIS_URL', 'http://x'],
    ['DISCORD_PUBLIC_KEY', 'nothex'],
    ['DISCORD_APPLICATION_ID', 'abc'],
    ['AGENTVM_ALLOW_RUNC', 'maybe'],
    ['AGENTVM_LOG_LEVEL', 'loud'],
    ['AGENTVM_OUTBOX_MAX_FILES', '0'],
    ['SLACK_API_URL', 'not a url'],
    ['DOCKER_HOST', 'ftp://x'],
  ];
  for (const [name, value] of cases) {
    it(`${name}=${value}`, () => {
      const err = configError({ [name]: value });
      expect(err.message).toContain(name);
      expect(err.status).toBe(400);
    });
  }

  it('names every wrong setting in one error', () => {
    const bad = {
      AGENTVM_RUNTIME: 'firecracker',
      AGENTVM_PORT: '99999',
      DATABASE_URL: 'mysql://x',
      REDIS_URL: 'http://x',
      DISCORD_PUBLIC_KEY: 'nothex',
      AGENTVM_ALLOW_RUNC: 'maybe',
    };
    const err = configError(bad);
    for (const name of Object.keys(bad)) expect(err.message).toContain(name);
  });

  // Known gap (reported): DOCKER_HOST is validated only after the schema passes, so a bad
  // DOCKER_HOST next to another bad setting is not named. Flip to `it` once config.ts reports both.
  it('names a bad DOCKER_HOST together with other wrong settings', () => {
    const err = configError({ DOCKER_HOST: 'ftp://x', AGENTVM_PORT: '99999' });
    expect(err.message).toContain('AGENTVM_PORT');
    expect(err.message).toContain('DOCKER_HOST');
  });

  it('never echoes secret values in the error', () => {
    const err = configError({
      SLACK_SIGNING_SECRET: 's3cr3t-value',
      SLACK_BOT_TOKEN: 'xoxb-bot-token-value',
      CLICKUP_WEBHOOK_SECRET: 'clickup-hook-secret',
      DISCORD_BOT_TOKEN: 'discord-bot-token-value',
      AGENTVM_PORT: '99999',
    });
    expect(err.message).toContain('AGENTVM_PORT');
    for (const s of ['s3cr3t-value', 'xoxb-bot-token-value', 'clickup-hook-secret', 'discord-bot-token-value']) {
      expect(err.message).not.toContain(s);
    }
  });

  it('does not echo credentials embedded in a rejected URL', () => {
    const err = configError({
      DATABASE_URL: 'mysql://admin:hunter2-pw@db/x',
      REDIS_URL: 'http://:redis-pw-42@cache:6379',
    });
    expect(err.message).toContain('DATABASE_URL');
    expect(err.message).toContain('REDIS_URL');
    expect(err.message).not.toContain('hunter2-pw');
    expect(err.message).not.toContain('redis-pw-42');
  });
});

describe('runc guard', () => {
  it('refuses AGENTVM_RUNTIME=runc without AGENTVM_ALLOW_RUNC', () => {
    const err = configError({ AGENTVM_RUNTIME: 'runc' });
    expect(err.message).toContain('AGENTVM_RUNTIME');
    expect(err.message).toContain('AGENTVM_ALLOW_RUNC');
  });

  it('refuses runc when AGENTVM_ALLOW_RUNC is explicitly off', () => {
    expect(configError({ AGENTVM_RUNTIME: 'runc', AGENTVM_ALLOW_RUNC: '0' }).message).toContain('AGENTVM_RUNTIME');
  });

  it('allows runc with AGENTVM_ALLOW_RUNC=1', () => {
    const c = loadConfig({ AGENTVM_RUNTIME: 'runc', AGENTVM_ALLOW_RUNC: '1' });
    expect(c.runtime).toBe('runc');
    expect(c.allowRunc).toBe(true);
  });
});

describe('DOCKER_HOST', () => {
  it('defaults to the local socket', () => {
    expect(parseDockerHost(undefined)).toEqual({ socketPath: '/var/run/docker.sock' });
  });

  it('parses unix:// sockets', () => {
    expect(parseDockerHost('unix:///run/user/1000/docker.sock')).toEqual({
      socketPath: '/run/user/1000/docker.sock',
    });
    expect(loadConfig({ DOCKER_HOST: 'unix:///tmp/d.sock' }).docker).toEqual({ socketPath: '/tmp/d.sock' });
  });

  it('parses tcp://, http:// and https:// hosts', () => {
    expect(parseDockerHost('tcp://10.0.0.5:2375')).toEqual({ protocol: 'http', host: '10.0.0.5', port: 2375 });
    expect(parseDockerHost('tcp://docker.internal:12345/')).toEqual({
      protocol: 'http',
      host: 'docker.internal',
      port: 12345,
    });
    expect(parseDockerHost('http://localhost:2375')).toEqual({ protocol: 'http', host: 'localhost', port: 2375 });
    expect(parseDockerHost('https://remote:2376')).toEqual({ protocol: 'https', host: 'remote', port: 2376 });
    expect(loadConfig({ DOCKER_HOST: 'tcp://127.0.0.1:2375' }).docker).toEqual({
      protocol: 'http',
      host: '127.0.0.1',
      port: 2375,
    });
  });

  it('defaults the port by protocol', () => {
    expect(parseDockerHost('tcp://dockerd')).toEqual({ protocol: 'http', host: 'dockerd', port: 2375 });
    expect(parseDockerHost('https://dockerd')).toEqual({ protocol: 'https', host: 'dockerd', port: 2376 });
  });

  it('rejects other forms', () => {
    for (const v of ['ftp://x', 'ssh://user@host', 'dockerd:2375', 'tcp://host:port', 'tcp://host:2375/path', 'unix://', 'tcp://h:99999', 'tcp://h:0']) {
      expect(() => parseDockerHost(v), v).toThrow(/unix:\/\/|tcp:\/\//);
    }
  });
});
