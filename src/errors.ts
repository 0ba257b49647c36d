/**
 * The one error type agent-vm raises on purpose. `status` is what an HTTP caller sees,
 * `code` is stable for scripts and tests, and `retryable: false` marks decisions (policy
 * denials, bad input) that a queue must never retry.
 */
export class AgentVmError extends Error {
  readonly code: string;
  readonly status: number;
  readonly retryable: boolean;

  constructor(
    code: string,
    message: string,
    options: { status?: number; retryable?: boolean; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AgentVmError';
    this.code = code;
    this.status = options.status ?? 500;
    this.retryable = options.retryable ?? false;
  }
}

export function isAgentVmError(err: unknown, code?: string): err is AgentVmError {
  return err instanceof AgentVmError && (code === undefined || err.code === code);
}

/** A short, single-line description of any thrown value, for logs and user-facing reports. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    // Drizzle's query error carries the SQL and its parameters (an agent's text, a person's
    // message): only why the database refused it is said, never what was sent.
    if (err.message.startsWith('Failed query: ') && err.cause !== undefined && err.cause !== null) {
      const code = (err.cause as { code?: unknown }).code;
      const why = (err.cause instanceof Error ? err.cause.message : String(err.cause)).split('\n')[0]!.slice(0, 300);
      return `a database query failed (${typeof code === 'string' && !why.includes(code) ? `${code}: ` : ''}${why})`;
    }
    return err.message;
  }
  return String(err);
}
