// What the peer's server and worker share: settings from the environment (the bench sets them), the
// queue's and the live channel's names, and the Redis connection.
'use strict';

const env = process.env;

module.exports = {
  QUEUE: 'phases',
  CHANNEL: 'phase_events', // the worker publishes each committed event here; every server process listens
  redis: { host: '127.0.0.1', port: Number(env.REDIS_PORT || 6379), maxRetriesPerRequest: null },
  databaseUrl: env.DATABASE_URL, // a database migrated by the project: the same tables it writes
  port: Number(env.PEER_PORT || 4600),
  serverProcesses: Number(env.API_WORKERS || 1), // as the project's API: one process per core
  // As the project's phase workers: PHASE_WORKERS (2) runs of PHASE_ROW_WORKERS (4) triggers at once.
  concurrency: Number(env.PEER_CONCURRENCY || 8),
  integrationsUrl: env.INTEGRATIONS_API_URL, // the sandbox's integrations emulator
  integrationsToken: env.INTEGRATIONS_API_TOKEN || 'sandbox-token',
  callbackUrl: env.PHASE_CALLBACK_URL || 'http://127.0.0.1:8000',
  jwt: {
    secret: new TextEncoder().encode(env.JWT_SECRET),
    issuer: env.JWT_ISSUER || 'wrk-orchestration-dev',
    audience: env.JWT_AUDIENCE || 'wrk-orchestration',
  },
  bodyMaxBytes: Number(env.REQUEST_BODY_MAX_BYTES || 1048576),
  jsonMaxDepth: Number(env.REQUEST_JSON_MAX_DEPTH || 32),
};
