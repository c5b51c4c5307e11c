// The peer's worker: each BullMQ job is one phase-1 trigger, done as the project's phase run does it
// (domain/phases/phases.py begin / complete, orchestration_defs/phases.py act): a statement (progress
// running, `phase_started`), the integrations call with the trigger's idempotency key, no transaction
// open, then a statement (progress completed, audit row, `phase_completed`), each a transaction of its
// own; each committed event is published on Redis for the servers' live streams. A failure records
// `phase_failed` and BullMQ retries.
'use strict';

const crypto = require('node:crypto');
const { Worker } = require('bullmq');
const IORedis = require('ioredis');
const { Pool } = require('pg');
const config = require('./shared');

// domain/phases/phase_statements.py, phase 1: each transaction's writes as one statement (autocommit, one
// round trip), as the project runs them; no queue row to ack (Redis is this side's queue) and no NOTIFY
// (its events go out on Redis after the commit). The progress never moves backwards.
const PROGRESS =
  'progress AS (INSERT INTO sync_progress (id, tenant_id, user_id, sync_id, seller_id, phase, status, percent, ' +
  'started_at, updated_at, completed_at) VALUES ($1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::varchar, ' +
  '$6::integer, $7::varchar, $8::integer, $9::timestamptz, $9::timestamptz, NULL) ' +
  'ON CONFLICT (tenant_id, user_id, sync_id) DO UPDATE SET phase = excluded.phase, status = excluded.status, ' +
  'updated_at = excluded.updated_at, ' +
  'percent = CASE WHEN excluded.percent > sync_progress.percent THEN excluded.percent ELSE sync_progress.percent END, ' +
  "seller_id = COALESCE(NULLIF(sync_progress.seller_id, ''), excluded.seller_id), " +
  'completed_at = COALESCE(excluded.completed_at, sync_progress.completed_at) ' +
  'WHERE excluded.phase > sync_progress.phase OR (excluded.phase = sync_progress.phase AND (' +
  "(sync_progress.status = 'pending' AND excluded.status IN ('running', 'completed', 'failed')) OR " +
  "(sync_progress.status = 'running' AND excluded.status IN ('completed', 'failed')) OR " +
  "(sync_progress.status = 'failed' AND excluded.status IN ('running', 'completed')))) RETURNING sync_progress.id)";
// domain/phases/phase_events.py append_sql: the stream's next number and the event.
const EVENT =
  'next AS (INSERT INTO phase_event_sequences (tenant_id, user_id, last_seq) VALUES ($2, $3, 1) ' +
  'ON CONFLICT (tenant_id, user_id) DO UPDATE SET last_seq = phase_event_sequences.last_seq + 1 RETURNING last_seq), ' +
  'event AS (INSERT INTO phase_events (tenant_id, user_id, seq, type, sync_id, phase, data, created_at) ' +
  'SELECT $2, $3, last_seq, $10, $4, $6, $11, $12 FROM next RETURNING seq, created_at) ' +
  'SELECT seq, created_at FROM event';
// $13.. : the audit row's run id, attempt, outcome, duration, error, details, start
const AUDIT =
  'audit AS (INSERT INTO phase_audit (tenant_id, user_id, sync_id, phase, trigger_id, run_id, attempt, outcome, ' +
  'duration_s, error, details, started_at, finished_at) VALUES ($2, $3, $4, $6, $13, $14, $15, $16, $17, $18, $19, ' +
  '$20, $9) RETURNING id)';
const BEGIN_STEP = `WITH ${PROGRESS}, ${EVENT}`;
const END_STEP = `WITH ${PROGRESS}, ${AUDIT}, ${EVENT}`;
const NAME = 'oauth_completed';

const db = new Pool({ connectionString: config.databaseUrl, max: config.concurrency });
const publisher = new IORedis(config.redis);

// One step: its statement (a transaction of its own); the event it appended, as the stream shows it.
async function step(sql, t, status, type, data, audit) {
  const now = new Date();
  const percent = status === 'completed' ? Math.floor(100 / 7) : 0;
  const params = [
    crypto.randomUUID(), t.tenant_id, t.user_id, t.sync_id, t.input.seller_id ?? null, t.phase, status, percent, now,
    type, data, now, ...(audit || []),
  ];
  const { rows } = await db.query(sql, params);
  const { seq, created_at } = rows[0];
  const view = { seq: Number(seq), type, tenant_id: t.tenant_id, user_id: t.user_id, sync_id: t.sync_id, phase: t.phase };
  return [{ ...view, data, created_at: created_at.toISOString() }];
}

function auditRow(t, job, outcome, started, error, details) {
  return [
    t.trigger_id, `bullmq:${job.id}`.slice(0, 64), job.attemptsMade + 1, outcome, (Date.now() - started.getTime()) / 1000,
    error, details, started,
  ];
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
  const started_ = { trigger_id: t.trigger_id, attempt: job.attemptsMade + 1, name: NAME };
  await publish(await step(BEGIN_STEP, t, 'running', 'phase_started', started_));
  let result;
  try {
    result = { sync_job: (await startSync(t)).id };
  } catch (err) {
    const error = `${err.name}: ${err.message}`;
    const final = job.attemptsMade + 1 >= (job.opts.attempts || 1);
    const data = { trigger_id: t.trigger_id, name: NAME, error: error.slice(0, 500), final };
    const audit = auditRow(t, job, final ? 'dead' : 'failed', started, error, { retryable: true });
    await publish(await step(END_STEP, t, 'failed', 'phase_failed', data, audit));
    throw err; // BullMQ retries with the job's backoff
  }
  const audit = auditRow(t, job, 'completed', started, null, { result });
  await publish(await step(END_STEP, t, 'completed', 'phase_completed', { trigger_id: t.trigger_id, name: NAME, ...result }, audit));
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
