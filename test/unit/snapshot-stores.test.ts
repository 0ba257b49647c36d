/**
 * Both snapshot stores against one contract: the local directory store, and the S3 store against
 * s3rver (an S3-compatible server started in this process, test/fakes/s3.ts).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveName, manifestName } from '../../src/sandbox/snapshots/common.js';
import { createSnapshotStore, parseS3Url } from '../../src/sandbox/snapshots/index.js';
import { createLocalSnapshotStore } from '../../src/sandbox/snapshots/local.js';
import { createS3SnapshotStore } from '../../src/sandbox/snapshots/s3.js';
import type { SnapshotStore } from '../../src/sandbox/snapshots/types.js';
import { describeSnapshotStore } from '../contracts/snapshot-store.js';
import { tempDir } from '../helpers/env.js';
import { startFakeS3, type FakeS3 } from '../fakes/s3.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

describeSnapshotStore({
  name: 'local directory',
  async make(keep) {
    const dir = tempDir('snapstore');
    dirs.push(dir);
    return createLocalSnapshotStore({ dir, ...(keep ? { keep } : {}) });
  },
  async tamper(store, agent, generation, what, change) {
    const file = path.join(store.location, agent, what === 'archive' ? archiveName(generation) : manifestName(generation));
    await fs.writeFile(file, change(await fs.readFile(file)));
  },
  writerOptions: (store) => ({ kind: 'local', dir: store.location }),
  killAfterBytes: 2 * 1024 * 1024,
});

let s3: FakeS3;
beforeAll(async () => {
  s3 = await startFakeS3();
});
afterAll(() => s3?.close());
const clientFor = () => new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: s3.credentials });

describeSnapshotStore({
  name: 's3 (s3rver)',
  async make(keep) {
    return createS3SnapshotStore({ url: `s3://${s3.bucket}/t-${randomBytes(4).toString('hex')}`, endpoint: s3.endpoint, credentials: s3.credentials, ...(keep ? { keep } : {}) });
  },
  async tamper(store, agent, generation, what, change) {
    const { bucket, prefix } = parseS3Url(store.location);
    const Key = `${prefix}/${agent}/${what === 'archive' ? archiveName(generation) : manifestName(generation)}`;
    const c = clientFor();
    const got = await c.send(new GetObjectCommand({ Bucket: bucket, Key }));
    const body = change(Buffer.from(await got.Body!.transformToByteArray()));
    await c.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body, ContentLength: body.length }));
    c.destroy();
  },
  writerOptions: (store) => ({ kind: 's3', url: store.location, endpoint: s3.endpoint, credentials: s3.credentials }),
  // Past the first 8 MiB part: the kill lands in the middle of a multipart upload.
  killAfterBytes: 12 * 1024 * 1024,
});

describe('snapshot store from configuration', () => {
  it('is local under the data directory by default, a file:/// directory, or S3 from s3://', () => {
    const s3s = { endpoint: undefined, region: 'us-east-1', accessKeyId: undefined, secretAccessKey: undefined, sessionToken: undefined, forcePathStyle: undefined };
    const local: SnapshotStore = createSnapshotStore({ url: undefined, keep: 5, s3: s3s }, '/data');
    expect([local.kind, local.location, local.keep]).toEqual(['local', '/data/snapshots', 5]);
    const file = createSnapshotStore({ url: 'file:///srv/snaps', keep: 2, s3: s3s }, '/data');
    expect([file.kind, file.location, file.keep]).toEqual(['local', '/srv/snaps', 2]);
    const remote = createSnapshotStore({ url: 's3://my-bucket/agents/prod/', keep: 7, s3: s3s }, '/data');
    expect([remote.kind, remote.location, remote.keep]).toEqual(['s3', 's3://my-bucket/agents/prod', 7]);
    expect(() => parseS3Url('s3://A_B')).toThrow(/must look like s3:\/\/bucket/);
  });
});
