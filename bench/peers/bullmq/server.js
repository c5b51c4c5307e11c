// The peer's HTTP side: Fastify's POST /api/v1/workflow/phase/1 (verify the HS256 token, validate the
// body as the project does, enqueue one BullMQ job whose id is the project's dedup key: a repeat is that
// job) and the user's live stream, GET /ws/users/:user_id (WebSocket), fed by Redis pub/sub from the
// worker. As many processes as the project's API (node:cluster, API_WORKERS).
'use strict';

const cluster = require('node:cluster');
const crypto = require('node:crypto');
const Fastify = require('fastify');
const { Queue } = require('bullmq');
const IORedis = require('ioredis');
const jose = require('jose');
const { Pool } = require('pg');
const config = require('./shared');

const SERVICE = 'service';
const READ_ROLES = new Set([SERVICE, 'ops_admin', 'ops_build', 'ops_release', 'admin']); // api/routes/phases.py READ_ROLES
const IDENT = { type: 'string', minLength: 1, maxLength: 200 };
const PHASE1_BODY = {
  type: 'object',
  required: ['user_id'],
  properties: { user_id: IDENT, sync_id: IDENT, seller_id: IDENT },
  additionalProperties: true, // callers' other metadata rides with the trigger
};

function problem(reply, status, code, detail) {
  return reply.code(status).type('application/problem+json').send({ status, code, detail });
}

async function principal(token) {
  const { payload } = await jose.jwtVerify(token, config.jwt.secret, {
    algorithms: ['HS256'],
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
    requiredClaims: ['sub', 'exp', 'iat'],
    clockTolerance: 30,
  });
  return payload;
}

function tenantOf(claims, hint) {
  const tenants = claims.tenants || [];
  if (hint) return tenants.includes(hint) ? hint : null;
  return tenants.length === 1 ? tenants[0] : null;
}

function rolesIn(claims, tenant) {
  return new Set((claims.tenant_roles || {})[tenant] || []);
}

function depth(value) {
  if (value === null || typeof value !== 'object') return 0;
  let deepest = 0;
  for (const item of Object.values(value)) deepest = Math.max(deepest, depth(item));
  return deepest + 1;
}

// domain/phases/requests.py dedup_key: (tenant, user, sync, phase); ids holding ':' or too long: hashed.
function dedupKey(parts) {
  const key = parts.join(':');
  if (key.length <= 300 && !parts.some((p) => p.includes(':'))) return key;
  const json = '[' + parts.map((p) => JSON.stringify(p)).join(', ') + ']'; // Python's json.dumps spacing
  return 'phase:sha256:' + crypto.createHash('sha256').update(json).digest('hex');
}

async function start() {
  const app = Fastify({ bodyLimit: config.bodyMaxBytes, logger: false });
  await app.register(require('@fastify/websocket'));
  const queue = new Queue(config.QUEUE, { connection: config.redis });
  const redis = await queue.client;
  const db = new Pool({ connectionString: config.databaseUrl, max: 4 });

  app.post('/api/v1/workflow/phase/:phase', { schema: { body: PHASE1_BODY } }, async (request, reply) => {
    const auth = request.headers.authorization || '';
    let claims;
    try {
      claims = await principal(auth.replace(/^Bearer /, ''));
    } catch (err) {
      return problem(reply, 401, 'unauthorized', `invalid token: ${err.code || err.message}`);
    }
    const tenant = tenantOf(claims, request.headers['x-tenant-id']);
    if (!tenant || !rolesIn(claims, tenant).has(SERVICE)) return problem(reply, 403, 'forbidden', 'needs role service');
    if (request.params.phase !== '1') return problem(reply, 400, 'invalid_phase', 'the peer does phase 1 only');
    const body = request.body;
    if (depth(body) > config.jsonMaxDepth) return problem(reply, 422, 'validation_error', 'JSON nested too deep');
    const user = body.user_id.trim();
    const sync = (body.sync_id || '').trim() || `oauth_${user}_${Math.floor(Date.now() / 1000)}`;
    const { user_id: _u, sync_id: _s, ...input } = body;
    const key = dedupKey(['phase', tenant, user, sync, '1']);
    const triggerId = await redis.incr('peer:trigger_id');
    const trigger = { trigger_id: triggerId, tenant_id: tenant, user_id: user, sync_id: sync, phase: 1, input };
    // BullMQ refuses ':' in a custom id; percent-encoding keeps keys apart. Completed jobs are kept, so a
    // repeat after completion is still the one job (the project reads its audit for that).
    await queue.add('phase', trigger, { jobId: encodeURIComponent(key), attempts: 5, backoff: { type: 'exponential', delay: 1000 } });
    reply.header('Location', `/v1/users/${encodeURIComponent(user)}/syncs/${encodeURIComponent(sync)}`);
    return reply.code(202).send({ trigger_id: triggerId, sync_id: sync, phase: 1 });
  });

  // The live stream: every event the worker commits reaches the process's subscribers of its user.
  const subscribers = new Map(); // "tenant\0user" -> Set of { socket, last }
  const listener = new IORedis(config.redis);
  await listener.subscribe(config.CHANNEL);
  listener.on('message', (_channel, message) => {
    const event = JSON.parse(message);
    for (const sub of subscribers.get(`${event.tenant_id}\0${event.user_id}`) || []) deliver(sub, event);
  });
  function deliver(sub, event) {
    if (sub.pending) return sub.pending.push(event); // replaying stored events first
    if (event.seq <= sub.last) return;
    sub.last = event.seq;
    sub.socket.send(JSON.stringify(event));
  }

  app.get('/ws/users/:user_id', { websocket: true }, async (socket, request) => {
    const user = request.params.user_id;
    const offered = (request.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim());
    const token = offered[0] === 'bearer' ? offered[1] : request.query.access_token;
    let claims;
    try {
      claims = await principal(token || '');
    } catch (err) {
      return socket.close(4401, 'unauthorized');
    }
    const tenant = tenantOf(claims, request.headers['x-tenant-id'] || request.query.tenant_id);
    const readers = tenant ? rolesIn(claims, tenant) : new Set();
    if (!tenant || (claims.sub !== user && ![...readers].some((r) => READ_ROLES.has(r)))) {
      return socket.close(4403, 'forbidden');
    }
    const key = `${tenant}\0${user}`;
    const after = request.query.after === undefined ? null : Number(request.query.after);
    const sub = { socket, last: after ?? 0, pending: after === null ? null : [] };
    if (!subscribers.has(key)) subscribers.set(key, new Set());
    subscribers.get(key).add(sub);
    socket.on('close', () => {
      subscribers.get(key)?.delete(sub);
      if (subscribers.get(key)?.size === 0) subscribers.delete(key);
    });
    if (after !== null) {
      // ?after=<seq>: the stored events first (the same rows the worker writes), then the live ones.
      const { rows } = await db.query(
        'SELECT seq, type, tenant_id, user_id, sync_id, phase, data, created_at FROM phase_events ' +
          'WHERE tenant_id = $1 AND user_id = $2 AND seq > $3 ORDER BY seq LIMIT 500',
        [tenant, user, after],
      );
      const live = sub.pending;
      sub.pending = null;
      for (const row of rows) deliver(sub, { ...row, seq: Number(row.seq), created_at: row.created_at.toISOString() });
      for (const event of live) deliver(sub, event);
    }
  });

  app.get('/health', async () => ({ status: 'ok' }));
  await app.listen({ port: config.port, host: '127.0.0.1' });
}

if (cluster.isPrimary && config.serverProcesses > 1) {
  for (let n = 0; n < config.serverProcesses; n++) cluster.fork();
  cluster.on('exit', (worker, code) => {
    console.error(`peer server process ${worker.process.pid} exited (${code})`);
    process.exit(1);
  });
} else {
  start().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
