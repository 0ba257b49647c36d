/**
 * Snapshot store on S3 or any S3-compatible object store (AGENTVM_SNAPSHOT_URL=s3://bucket/prefix),
 * so an agent's world survives the loss of its gateway host. Objects:
 * `<prefix>/<agent>/<generation>.tar` and `<prefix>/<agent>/<generation>.json`.
 *
 * Atomicity comes from the object store: an object appears whole or not at all (PutObject, or a
 * multipart upload that is completed only after its last part; a failed one is aborted). The
 * archive is written first and the manifest last, so a writer that dies leaves at most an archive
 * without a manifest, which is not a generation and is swept by a later write. A process killed
 * during a multipart upload leaves parts that no listing shows: give the bucket a lifecycle rule
 * that aborts incomplete multipart uploads after a day.
 *
 * Deliberately left out: conditional writes (If-None-Match). Not every S3-compatible server
 * honours them; an agent's writes are serialized by its unit's lease and, here, per process.
 */
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { AgentVmError, describeError, isAgentVmError } from '../../errors.js';
import { AGENT_ID_PATTERN } from '../spec.js';
import {
  HashingCounter, archiveName, checkAgent, checkGeneration, checkKeep, keyedLock, makeManifest, manifestName, missingSnapshot,
  parseManifest, parseName, prunable,
} from './common.js';
import type { SnapshotStore, StoredGeneration } from './types.js';

/** Multipart part size (S3's minimum is 5 MiB); an archive smaller than one part is one PutObject. */
const PART_BYTES = 8 * 1024 * 1024;
/** Archives without a manifest younger than this may be another writer's work in progress. */
const STALE_MS = 10 * 60_000;

export interface S3SnapshotStoreOptions {
  /** `s3://bucket` or `s3://bucket/some/prefix`. */
  url: string;
  /** For S3-compatible servers (MinIO, Ceph, a test server): e.g. `http://127.0.0.1:9000`. */
  endpoint?: string;
  region?: string;
  /** Unset: the SDK's default chain (instance role, shared config files). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Path-style URLs (`endpoint/bucket/key`); default: true when an endpoint is given. */
  forcePathStyle?: boolean;
  keep?: number;
}

export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) throw new AgentVmError('config_invalid', `snapshot URL ${JSON.stringify(url)} must look like s3://bucket or s3://bucket/prefix`, { status: 400 });
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  return { bucket: m[1]!, prefix };
}

type S3 = typeof import('@aws-sdk/client-s3');

export function createS3SnapshotStore(o: S3SnapshotStoreOptions): SnapshotStore {
  const { bucket, prefix } = parseS3Url(o.url);
  const keep = checkKeep(o.keep ?? 5);
  const lock = keyedLock();
  const location = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
  const base = (agentId: string) => `${prefix ? `${prefix}/` : ''}${agentId}/`;
  // Loaded on first use: a gateway on the local store never loads the AWS SDK.
  let client: Promise<{ sdk: S3; s3: S3Client }> | undefined;
  const connect = () =>
    (client ??= import('@aws-sdk/client-s3').then((sdk) => ({
      sdk,
      s3: new sdk.S3Client({
        region: o.region ?? 'us-east-1',
        ...(o.endpoint ? { endpoint: o.endpoint } : {}),
        ...(o.credentials ? { credentials: o.credentials } : {}),
        forcePathStyle: o.forcePathStyle ?? o.endpoint !== undefined,
        // Many S3-compatible servers do not know the newer default CRC checksums.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      }),
    })));

  async function s3call<T>(what: string, fn: (c: { sdk: S3; s3: S3Client }) => Promise<T>): Promise<T> {
    try {
      return await fn(await connect());
    } catch (err) {
      if (isAgentVmError(err)) throw err;
      const name = (err as { name?: string }).name ?? 'Error';
      throw new AgentVmError('snapshot_store_error', `snapshot store ${location}: ${what} failed: ${name}: ${describeError(err).slice(0, 300)}`, { status: 502, retryable: true, cause: err });
    }
  }

  async function keys(agentId: string): Promise<Array<{ name: string; at: number }>> {
    return s3call('list', async ({ sdk, s3 }) => {
      const out: Array<{ name: string; at: number }> = [];
      let token: string | undefined;
      do {
        const r = await s3.send(new sdk.ListObjectsV2Command({ Bucket: bucket, Prefix: base(agentId), ContinuationToken: token }));
        for (const c of r.Contents ?? []) if (c.Key) out.push({ name: c.Key.slice(base(agentId).length), at: c.LastModified?.getTime() ?? 0 });
        token = r.IsTruncated ? r.NextContinuationToken : undefined;
      } while (token);
      return out;
    });
  }

  async function del(agentId: string, names: string[]): Promise<void> {
    if (names.length === 0) return;
    await s3call('delete', async ({ sdk, s3 }) => {
      // One by one, manifests first: DeleteObjects needs Content-MD5, which not every server takes.
      for (const n of names) await s3.send(new sdk.DeleteObjectCommand({ Bucket: bucket, Key: base(agentId) + n }));
    });
  }

  /** Uploads the stream whole or not at all; resolves to its sha256 and size. */
  async function upload(key: string, archive: Readable): Promise<{ sha256: string; bytes: number }> {
    const counter = new HashingCounter();
    archive.on('error', (err) => counter.destroy(err));
    archive.pipe(counter);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let uploadId: string | undefined;
    const parts: Array<{ ETag: string; PartNumber: number }> = [];
    const { sdk, s3 } = await s3call('connect', async (c) => c);
    const flushPart = async () => {
      const body = Buffer.concat(pending);
      pending = [];
      pendingBytes = 0;
      uploadId ??= (await s3.send(new sdk.CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/x-tar' }))).UploadId;
      const PartNumber = parts.length + 1;
      const r = await s3.send(new sdk.UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber, Body: body, ContentLength: body.length }));
      parts.push({ ETag: r.ETag ?? '', PartNumber });
    };
    try {
      for await (const chunk of counter as AsyncIterable<Buffer>) {
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= PART_BYTES) await flushPart();
      }
      if (uploadId === undefined) {
        const body = Buffer.concat(pending);
        await s3.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentLength: body.length, ContentType: 'application/x-tar' }));
      } else {
        if (pendingBytes > 0) await flushPart();
        await s3.send(new sdk.CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
      }
    } catch (err) {
      if (uploadId !== undefined) await s3.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
      if (isAgentVmError(err) || (err as { $metadata?: unknown }).$metadata === undefined) throw err;
      throw new AgentVmError('snapshot_store_error', `snapshot store ${location}: upload failed: ${describeError(err).slice(0, 300)}`, { status: 502, retryable: true, cause: err });
    }
    return { sha256: counter.hash.digest('hex'), bytes: counter.bytes };
  }

  async function listUnlocked(agentId: string): Promise<StoredGeneration[]> {
    const manifests = (await keys(agentId)).map((k) => parseName(k.name)).filter((p) => p?.kind === 'manifest').map((p) => p!.generation);
    const out: StoredGeneration[] = [];
    for (const g of manifests.sort((a, b) => b - a)) {
      const text = await s3call('read manifest', async ({ sdk, s3 }) => {
        const r = await s3.send(new sdk.GetObjectCommand({ Bucket: bucket, Key: base(agentId) + manifestName(g) }));
        return r.Body?.transformToString('utf8');
      }).catch((err: unknown) => (isAgentVmError(err, 'snapshot_store_error') && /NoSuchKey/.test(err.message) ? undefined : Promise.reject(err)));
      out.push(text === undefined ? { generation: g, manifestError: 'manifest unreadable' } : parseManifest(text, agentId, g));
    }
    return out;
  }

  async function tidy(agentId: string): Promise<void> {
    const all = await keys(agentId);
    const complete = all.map((k) => parseName(k.name)).filter((p) => p?.kind === 'manifest').map((p) => p!.generation);
    const old = new Set(prunable(complete, keep));
    const kept = complete.filter((g) => !old.has(g));
    const oldestKept = kept.length > 0 ? Math.min(...kept) : 0;
    const now = Date.now();
    const doomed = all.filter((k) => {
      const p = parseName(k.name);
      if (!p) return false;
      if (old.has(p.generation) || p.generation < oldestKept) return true;
      return p.kind === 'archive' && !complete.includes(p.generation) && now - k.at > STALE_MS;
    });
    // Manifests first, so a generation disappears before its archive does.
    await del(agentId, doomed.map((k) => k.name).sort((a, b) => Number(b.endsWith('.json')) - Number(a.endsWith('.json'))));
  }

  return {
    kind: 's3',
    location,
    keep,

    put(agentId, archive, counts, meta) {
      checkAgent(agentId);
      // Observed now: it may reject while the archive is still being written.
      const counted = Promise.resolve(counts);
      counted.catch(() => undefined);
      return lock(agentId, async () => {
        const taken = (await keys(agentId)).map((k) => parseName(k.name)).filter((p) => p !== undefined).map((p) => p.generation);
        const generation = Math.max(0, ...taken) + 1;
        checkGeneration(generation);
        const { sha256, bytes } = await upload(base(agentId) + archiveName(generation), archive);
        const manifest = makeManifest(agentId, generation, sha256, bytes, await counted, meta);
        const body = `${JSON.stringify(manifest, null, 2)}\n`;
        await s3call('write manifest', ({ sdk, s3 }) =>
          s3.send(new sdk.PutObjectCommand({ Bucket: bucket, Key: base(agentId) + manifestName(generation), Body: body, ContentType: 'application/json' })),
        );
        await tidy(agentId);
        return manifest;
      });
    },

    list(agentId) {
      checkAgent(agentId);
      return listUnlocked(agentId);
    },

    async read(agentId, generation): Promise<Readable> {
      checkAgent(agentId);
      checkGeneration(generation);
      try {
        return await s3call('read', async ({ sdk, s3 }) => {
          const r = await s3.send(new sdk.GetObjectCommand({ Bucket: bucket, Key: base(agentId) + archiveName(generation) }));
          return r.Body as Readable;
        });
      } catch (err) {
        if (isAgentVmError(err, 'snapshot_store_error') && /NoSuchKey|NotFound/.test(err.message)) throw missingSnapshot(agentId, generation, location);
        throw err;
      }
    },

    describe(agentId, generation) {
      return `s3://${bucket}/${base(agentId)}${archiveName(generation)}`;
    },

    remove(agentId, generation) {
      checkAgent(agentId);
      return lock(agentId, async () => {
        const all = await keys(agentId);
        const manifests = all.map((k) => parseName(k.name)).filter((p) => p?.kind === 'manifest').map((p) => p!.generation);
        if (generation !== undefined) checkGeneration(generation);
        const doomed = all.filter((k) => generation === undefined || parseName(k.name)?.generation === generation).map((k) => k.name);
        await del(agentId, doomed.sort((a, b) => Number(b.endsWith('.json')) - Number(a.endsWith('.json'))));
        return generation === undefined ? manifests.length : manifests.includes(generation) ? 1 : 0;
      });
    },

    async agents() {
      return s3call('list agents', async ({ sdk, s3 }) => {
        const out = new Set<string>();
        let token: string | undefined;
        do {
          const r = await s3.send(new sdk.ListObjectsV2Command({ Bucket: bucket, Prefix: prefix ? `${prefix}/` : '', Delimiter: '/', ContinuationToken: token }));
          for (const p of r.CommonPrefixes ?? []) {
            const name = (p.Prefix ?? '').slice(prefix ? prefix.length + 1 : 0).replace(/\/$/, '');
            if (AGENT_ID_PATTERN.test(name)) out.add(name);
          }
          token = r.IsTruncated ? r.NextContinuationToken : undefined;
        } while (token);
        return [...out].sort();
      });
    },

    async close() {
      if (client) (await client.catch(() => undefined))?.s3.destroy();
      client = undefined;
    },
  };
}
