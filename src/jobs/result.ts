/**
 * A job's result as the agent sees it (the built-in tool's answer): one JSON text block plus the
 * same as structured content. stdout and stderr are cut to 16 KiB each here (the job row keeps
 * 64 KiB); whatever the job printed is the job's, and the MCP proxy redacts secret values from
 * it like from any tool result.
 */
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { JobResult } from './types.js';

const SHOWN_BYTES = 16 * 1024;

function cut(s: string): { text: string; cut: boolean } {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= SHOWN_BYTES) return { text: s, cut: false };
  return { text: b.subarray(0, SHOWN_BYTES).toString('utf8'), cut: true };
}

export function toolResult(r: JobResult): CallToolResult {
  const out = cut(r.stdout);
  const err = cut(r.stderr);
  const body = {
    job: r.id,
    status: r.status,
    exitCode: r.exitCode,
    timedOut: r.timedOut,
    stdout: out.text,
    stderr: err.text,
    outputTruncated: r.truncated || out.cut || err.cut,
    results: { dir: r.resultsDir, files: r.written, refused: r.refused },
    inputs: { bytes: r.bytesIn, refused: r.inputsRefused },
    teardownVerified: r.teardown.verified,
    ...(r.error ? { error: r.error } : {}),
  };
  return {
    content: [{ type: 'text', text: JSON.stringify(body, null, 2) }],
    structuredContent: body,
    // A command that ran and failed is an answer; a job that could not run or was stopped is not.
    ...(r.status === 'error' || r.status === 'cancelled' ? { isError: true } : {}),
  };
}
