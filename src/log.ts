import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr (stdout belongs to CLI output). Anything that looks like a
 * credential is redacted by key, wherever it sits in the object.
 */
export function createLogger(level: string = 'info', bindings: Record<string, unknown> = {}): Logger {
  return pino(
    {
      level,
      base: { svc: 'agent-vm', ...bindings },
      redact: {
        paths: [
          '*.token', '*.secret', '*.password', '*.authorization', '*.botToken', '*.appToken',
          '*.signingSecret', '*.webhookSecret', '*.databaseUrl', '*.redisUrl', 'token', 'secret',
          'password', 'authorization', 'headers.authorization', 'env',
        ],
        censor: '[redacted]',
      },
    },
    pino.destination(2),
  );
}
