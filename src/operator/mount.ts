/**
 * Wiring for operators, kept out of app.ts: the metrics registry and its `Metrics` (state gauges
 * read from the database at scrape time), and the operator API plus dashboard on the app, both
 * over one `OperatorService`.
 */
import type { Hono } from 'hono';
import type { Registry } from 'prom-client';
import type { Config } from '../config.js';
import type { Gateway } from '../gateway/index.js';
import type { Logger } from '../log.js';
import { createMetrics, type Metrics } from '../metrics.js';
import type { SnapshotStore } from '../sandbox/snapshots/types.js';
import type { SandboxDriver } from '../sandbox/types.js';
import { createMetricsRegistry } from '../server.js';
import type { Store } from '../store/index.js';
import { operatorQueries } from '../store/operator.js';
import { createOperatorApi } from './index.js';
import { createOperatorService } from './service.js';
import { createDashboard } from './ui.js';
import { loadProfiles } from '../governance/profiles.js';
import { createReleaseApi } from '../releases/api.js';
import { createReleaseService } from '../releases/service.js';

export interface Observability {
  registry: Registry;
  metrics: Metrics;
}

/** A registry with the process defaults and every `agentvm_` series; state gauges read `store`. */
export function createObservability(store: Store, registry: Registry = createMetricsRegistry()): Observability {
  return { registry, metrics: createMetrics(registry, operatorQueries(store.db)) };
}

/** Mounts `/v1/…` (operator API) and `/ui` (dashboard) on `app`. */
export function mountOperator(
  app: Hono,
  o: {
    config: Pick<Config, 'adminToken' | 'apiToken' | 'image' | 'runtime' | 'profilesDir' | 'canaryTurns'>;
    store: Store;
    driver: SandboxDriver;
    gateway: Gateway;
    metrics: Metrics;
    logger: Logger;
    /** Where snapshot generations are kept, to list them per agent. */
    snapshots?: Pick<SnapshotStore, 'list'>;
  },
): void {
  const { store, gateway } = o;
  const service = createOperatorService({
    approvals: gateway.approvals,
    pins: store.pins,
    audit: gateway.audit,
    logger: o.logger,
    queries: operatorQueries(store.db),
    transcripts: store.transcripts,
    agents: { profiles: () => gateway.router.profiles, rows: () => store.agents.list(), driver: o.driver, units: gateway.units, ...(o.snapshots ? { snapshots: o.snapshots } : {}) },
    metrics: o.metrics,
    feedback: store.feedback,
    redact: (t) => gateway.redact(t),
  });
  app.route('/', createOperatorApi({ adminToken: o.config.adminToken, apiToken: o.config.apiToken, approvals: gateway.approvals, pins: store.pins, audit: gateway.audit, logger: o.logger, service }));
  // Releases (src/releases/api.ts): the manifests on disk, as the CLI reads them.
  const profiles = async () => (await loadProfiles(o.config.profilesDir)).profiles;
  const releases = createReleaseService({ store, driver: o.driver, audit: gateway.audit, logger: o.logger, image: o.config.image, runtime: o.config.runtime, profiles, canaryTurns: o.config.canaryTurns });
  app.route('/', createReleaseApi({ service: releases, driver: o.driver, profiles, image: o.config.image, runtime: o.config.runtime, adminToken: o.config.adminToken, apiToken: o.config.apiToken, logger: o.logger }));
  app.route('/', createDashboard({ adminToken: o.config.adminToken, service, logger: o.logger }));
}
