// The peer's worker: each BullMQ job is one phase-1 trigger, done as the project's phase run does it
// (domain/phases/phases.py begin / complete, orchestration_defs/phases.py act): a transaction (progress
// running, `phase_started`), the integrations call with the trigger's idempotency key, no transaction
// open, then a transaction (progress completed, audit row, `phase_completed`); each committed event is
// published on Redis for the servers' live streams. A failure records `phase_failed` and BullMQ retries.
'use strict';

const crypto = require('node:crypto');
const { Worker } = require('bullmq');
const IORedis = require('ioredis');
const { Pool } = require('pg');
const config = require('./shared');

// domain/phases/phases.py PROGRESS_UPSERT, phase 1's moves: never backwards.
const PROGRESS_UPSERT =
  'INSERT INTO sync_progress (id, tenant_id, user_id, sync_id, seller_id, phase, status, percent, started_at, ' +
  'updated_at, completed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, NULL) ' +
  'ON CONFLICT (tenant_id, user_id, sync_id) DO UPDATE SET phase = excluded.phase, status = excluded.status, ' +
  'updated_at = excluded.updated_at, ' +
  'percent = GREATEST(excluded.percent, sync_progress.percent), ' +
  "seller_id = COALESCE(NULLIF(sync_progress.seller_id, ''), excluded.seller_id), " +
  'completed_at = COALESCE(excluded.completed_at, sync_progress.completed_at) ' +
  'WHERE excluded.phase > sync_progress.phase OR (excluded.phase = sync_progress.phase AND (' +
  "(sync_progress.status = 'pending' AND excluded.status IN ('running', 'completed', 'failed')) OR " +
  "(sync_progress.status = 'running' AND excluded.status IN ('completed', 'failed')) OR " +
  "(sync_progress.status = 'failed' AND excluded.status IN ('running', 'completed')))) RETURNING id";
// domain/phases/phase_events.py APPEND_SQL: the stream's next number and the event in one statement.
const APPEND_EVENT =
  'WITH next AS (INSERT INTO phase_event_sequences (tenant_id, user_id, last_seq) VALUES ($1, $2, 1) ' +
  'ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seq = phase_event_sequences.last_seq + 1 RETURNING last_seq) ' +
  'INSERT INTO phase_events (tenant_id, user_id, seq, type, sync_id, phase, data, created_at) ' +
  'SELECT $1, $2, last_seq, $3, $4, $5, $6, $7 FROM next RETURNING seq, created_at';
const AUDIT =
  'INSERT INTO phase_audit (tenant_id, user_id, sync_id, phase, trigger_id, run_id, attempt, outcome, duration_s, ' +
  'error, details, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)';
const NAME = 'oauth_completed';

const db = new Pool({ connectionString: config.databaseUrl, max: config.concurrency });
const publisher = new IORedis(config.redis);

async function transaction(work) {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    const events = await work(client);
    await client.query('COMMIT');
    return events;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

async function progress(client, t, status) {
  const percent = status === 'completed' ? Math.floor(100 / 7) : 0;
  await client.query(PROGRESS_UPSERT, [
    crypto.randomUUID(), t.tenant_id, t.user_id, t.sync_id, t.input.seller_id ?? null, t.phase, status, percent, new Date(),
  ]);
}

async function event(client, t, type, data) {
  const { rows } = await client.query(APPEND_EVENT, [t.tenant_id, t.user_id, type, t.sync_id, t.phase, data, new Date()]);
  const { seq, created_at } = rows[0];
  const view = { seq: Number(seq), type, tenant_id: t.tenant_id, user_id: t.user_id, sync_id: t.sync_id, phase: t.phase };
  return { ...view, data, created_at: created_at.toISOString() };
}

async function audit(client, t, job, outcome, started, error, details) {
  await client.query(AUDIT, [
    t.tenant_id, t.user_id, t.sync_id, t.phase, t.trigger_id, `bullmq:${job.id}`.slice(0, 64), job.attemptsMade + 1,
    outcome, (Date.now() - started.getTime()) / 1000, error, details, started, new Date(),
  ]);
}

// orchestration_defs/phases.py act, phase 1: start the seller's sync on the integrations backend.
async function startSync(t) {
  const response = await fetch(`${config.integrationsUrl}/v1/syncs`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${config.integrationsToken}`,
      'content-type': 'application/json',
      'idempotency-key': `phase1:trigger:${t.trigger_id}`,
    },
    body: JSON.stringify({
      tenant_id: t.tenant_id, user_id: t.user_id, sync_id: t.sync_id, seller_id: t.input.seller_id ?? null,
      callback_url: config.callbackUrl,
    }),
    signal: AbortSignal.timeout(10000),
  });
  if (!response.ok) throw new Error(`integrations: ${response.status} ${(await response.text()).slice(0, 300)}`);
  return response.json();
}

async function publish(events) {
  for (const e of events) await publisher.publish(config.CHANNEL, JSON.stringify(e));
}

async function processTrigger(job) {
  const t = job.data;
  const started = new Date();
  const begun = await transaction(async (client) => {
    await progress(client, t, 'running');
    return [await event(client, t, 'phase_started', { trigger_id: t.trigger_id, attempt: job.attemptsMade + 1, name: NAME })];
  });
  await publish(begun);
  let result;
  try {
    result = { sync_job: (await startSync(t)).id };
  } catch (err) {
    const error = `${err.name}: ${err.message}`;
    const final = job.attemptsMade + 1 >= (job.opts.attempts || 1);
    const failed = await transaction(async (client) => {
      await progress(client, t, 'failed');
      await audit(client, t, job, final ? 'dead' : 'failed', started, error, { retryable: true });
      return [await event(client, t, 'phase_failed', { trigger_id: t.trigger_id, name: NAME, error: error.slice(0, 500), final })];
    });
    await publish(failed);
    throw err; // BullMQ retries with the job's backoff
  }
  const completed = await transaction(async (client) => {
    await progress(client, t, 'completed');
    await audit(client, t, job, 'completed', started, null, { result });
    return [await event(client, t, 'phase_completed', { trigger_id: t.trigger_id, name: NAME, ...result })];
  });
  await publish(completed);
  return result;
}

const worker = new Worker(config.QUEUE, processTrigger, { connection: config.redis, concurrency: config.concurrency });
worker.on('error', (err) => console.error('peer worker:', err));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, async () => {
    await worker.close();
    await db.end();
    publisher.disconnect();
    process.exit(0);
  });
}
