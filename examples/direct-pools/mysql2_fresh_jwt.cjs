// A mysql2 pool straight to SingleStore (no proxy): every new physical connection asks the
// s2iam sidecar for the current database JWT, as the Cloud SQL connectors do.
//
// The JWT is the password, sent with mysql_clear_password (TLS required). The server checks
// it at login only: an open connection outlives its token, a *new* one needs a fresh token,
// so it is fetched in the auth plugin, which mysql2 calls for every handshake (it may
// return a promise).
//
// Settings (environment): S2_HOST, S2_PORT, S2_USER ("*" on SingleStore: the JWT's user),
// S2_DATABASE, S2_CA (CA file, verified), S2IAM_SOCKET + S2_WORKSPACE_GROUP (the sidecar),
// or S2IAM_TOKEN_FILE (a [[token]] sink file), S2_POOL_MAX_LIFETIME (seconds before a
// connection is replaced: 1800; mysql2's pool has no such setting, so query() below does it).
//
//   node mysql2_fresh_jwt.cjs                 one query
//   node mysql2_fresh_jwt.cjs --seconds 120   4 workers through the pool for that long
//
// Tested by scripts/check-real-database against a real MariaDB server with JWT login.
'use strict';
const fs = require('fs');
const http = require('http');
const mysql = require('mysql2/promise');

const env = process.env;

function freshJwt() {
  if (env.S2IAM_TOKEN_FILE) return Promise.resolve(fs.readFileSync(env.S2IAM_TOKEN_FILE, 'utf8').trim());
  const path = `/v1/token/database?workspaceGroupID=${encodeURIComponent(env.S2_WORKSPACE_GROUP)}&format=raw`;
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: env.S2IAM_SOCKET || '/run/s2iam/s2iam.sock', path, timeout: 10000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => (res.statusCode === 200 ? resolve(body.trim())
        : reject(new Error(`s2iam sidecar answered ${res.statusCode}: ${body.slice(0, 200)}`))));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('s2iam sidecar timed out')));
  });
}

function makePool() {
  return mysql.createPool({
    host: env.S2_HOST,
    port: Number(env.S2_PORT || 3306),
    user: env.S2_USER || '*',
    database: env.S2_DATABASE,
    ssl: { ca: fs.readFileSync(env.S2_CA) },
    authPlugins: {
      mysql_clear_password: () => async () => Buffer.from(`${await freshJwt()}\0`),
    },
    connectionLimit: 4,
    maxIdle: 2,
    idleTimeout: 60000,
    enableKeepAlive: true,
  });
}

// mysql2's pool closes idle connections but never old ones: replace a connection older
// than S2_POOL_MAX_LIFETIME when it is taken (a busy pool would keep its first
// connections forever; the server's wait_timeout or a failover would end them).
const born = new WeakMap();
const maxLifetimeMs = Number(env.S2_POOL_MAX_LIFETIME || 1800) * 1000;

async function query(pool, sql, params) {
  for (;;) {
    const conn = await pool.getConnection();
    if (Date.now() - (born.get(conn.connection) ?? Date.now()) > maxLifetimeMs) {
      conn.destroy();
      continue;
    }
    try {
      return await conn.execute(sql, params);
    } finally {
      conn.release();
    }
  }
}

async function run(seconds) {
  const pool = makePool();
  pool.pool.on('connection', (c) => born.set(c, Date.now()));
  const stop = Date.now() + seconds * 1000;
  let ok = 0;
  const errors = [];
  const worker = async (n) => {
    do {
      try {
        const [[r]] = await query(pool, 'SELECT ? + 0 AS n', [n]);
        if (Number(r.n) !== n) throw new Error(`got ${r.n}`);
        ok += 1;
      } catch (e) {
        errors.push(e.message);
      }
      await new Promise((r) => setTimeout(r, 50));
    } while (Date.now() < stop);
  };
  await Promise.all([0, 1, 2, 3].map(worker));
  await pool.end();
  console.log(`mysql2 pool, fresh JWT per connection: ${ok} queries, ${errors.length} failed ${errors.slice(0, 3).join('; ')}`);
  return errors.length === 0 && ok > 0;
}

const seconds = process.argv[2] === '--seconds' ? Number(process.argv[3]) : 0;
run(seconds).then((good) => { process.exitCode = good ? 0 : 1; }, (e) => { console.error(e); process.exitCode = 1; });
