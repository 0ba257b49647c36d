/**
 * A local S3-compatible server for tests and benches: s3rver, in-process, on 127.0.0.1 and a port
 * of the system's choosing, storing under a fresh temp directory that close() removes. It speaks
 * the S3 REST API the AWS SDK uses (path-style), including multipart uploads; it ignores
 * conditional writes and does not check signatures' secrets beyond its own default key.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';

export interface FakeS3 {
  endpoint: string;
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  close(): Promise<void>;
}

export async function startFakeS3(bucket = 'agentvm-test'): Promise<FakeS3> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), 'agentvm-s3-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    // s3rver's own fixed key pair.
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    async close() {
      await server.close();
      await fs.rm(directory, { recursive: true, force: true });
    },
  };
}
