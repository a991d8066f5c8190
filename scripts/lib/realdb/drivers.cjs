// Node's mysql2 against the real MariaDB, through the proxy and directly.
// Run by scripts/check-real-database (NODE_PATH=target/realdb/node/node_modules) with the
// S2IAM_REALDB_* variables set:
//
//   node drivers.cjs check          one line per case: "ok   NAME" / "FAIL NAME: why"
//   node drivers.cjs pool SECONDS   a mysql2 pool through the proxy, 4 workers; zero failures
//   node drivers.cjs bench          scripts/bench-real-database: connection setup, SELECT 1
//                                   round trip, a large result; proxy, direct (and the hop);
//                                   JSON lines
//
// Through the proxy mysql2 needs nothing special: no password, no ssl option (it never
// builds a TLS context unless asked).
'use strict';
const fs = require('fs');
const mysql = require('mysql2/promise');

const env = process.env;
const PROXY_PORT = Number(env.S2IAM_REALDB_PROXY_PORT);
const DB_PORT = Number(env.S2IAM_REALDB_PORT);
// scripts/bench-real-database: a plain TCP forwarder to the server (the "hop" side: the
// direct connection with one more process on its path and no protocol work in it).
const HOP_PORT = Number(env.S2IAM_REALDB_HOP_PORT || 0);
const USER = env.S2IAM_REALDB_USER;
const EXPECTED = `${USER}@%`;
const jwt = () => fs.readFileSync(env.S2IAM_REALDB_TOKEN_FILE, 'utf8').trim();

const proxy = (extra = {}) => ({ host: '127.0.0.1', port: PROXY_PORT, user: USER, database: 'app', ...extra });
// Straight to the server: the JWT as a clear-text password (read at each handshake)
// over verified TLS.
const direct = (extra = {}) => ({
  host: '127.0.0.1', port: DB_PORT, user: USER, database: 'app',
  ssl: { ca: fs.readFileSync(env.S2IAM_REALDB_CA), servername: 'localhost' },
  authPlugins: { mysql_clear_password: () => () => Buffer.from(`${jwt()}\0`) },
  ...extra,
});

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e && e.message}`);
  }
}

async function basic(opts) {
  const c = await mysql.createConnection(opts);
  try {
    const [[who]] = await c.query('SELECT CURRENT_USER() AS u');
    if (who.u !== EXPECTED) throw new Error(`CURRENT_USER() = ${who.u}`);
    const [rows] = await c.query('SELECT id, payload FROM big');
    if (rows.length !== 20000) throw new Error(`${rows.length} rows`);
    // execute(): a server-side prepared statement (binary protocol).
    const [[p]] = await c.execute('SELECT ? + 1 AS n, CONCAT(?, "x") AS s', [41, 'a']);
    if (Number(p.n) !== 42 || p.s !== 'ax') throw new Error(JSON.stringify(p));
  } finally {
    await c.end();
  }
}

async function multi() {
  const c = await mysql.createConnection(proxy({ multipleStatements: true }));
  try {
    const [sets] = await c.query('SELECT 1 AS a; SELECT 2 AS b, 3 AS c');
    if (sets.length !== 2 || sets[1][0].c !== 3) throw new Error(JSON.stringify(sets));
  } finally {
    await c.end();
  }
}

async function changeUser() {
  const c = await mysql.createConnection(proxy());
  try {
    await c.query('SET @x = 5');
    await c.changeUser({ user: USER, password: 'must-not-reach-the-server', database: 'app' });
    const [[r]] = await c.query('SELECT @x AS x, CURRENT_USER() AS u');
    if (r.x !== null || r.u !== EXPECTED) throw new Error(JSON.stringify(r));
  } finally {
    await c.end();
  }
}

// A query `timeout` and a cancel by threadId. mysql2's `timeout` only fails the query on the
// client (3.x sends no KILL: the connection stays busy until the server ends the query), so
// an application that wants the query stopped sends KILL QUERY with the connection's
// threadId from a second connection. threadId is the handshake's id: through the proxy, the
// proxy's own id for the session, which the proxy sends on with the server's. Without that,
// SELECT SLEEP(30) would hold the connection for 30 s.
async function queryTimeoutAndKill() {
  const c = await mysql.createConnection(proxy());
  try {
    const threadId = c.threadId ?? c.connection.threadId;
    if (!(threadId >= 1e9)) throw new Error(`threadId ${threadId}: not the proxy's`);
    const started = now();
    try {
      await c.query({ sql: 'SELECT SLEEP(30) AS s', timeout: 1000 });
      throw new Error('SELECT SLEEP(30) with timeout: 1000 did not time out');
    } catch (e) {
      if (e.code !== 'PROTOCOL_SEQUENCE_TIMEOUT') throw e;
    }
    const killer = await mysql.createConnection(proxy());
    try {
      await killer.query(`KILL QUERY ${threadId}`);
    } finally {
      await killer.end();
    }
    const [[r]] = await c.query('SELECT 1 AS one');
    const took = now() - started;
    if (r.one !== 1 || took > 15) throw new Error(`the connection answered after ${took.toFixed(1)} s`);
  } finally {
    c.destroy();
  }
}

async function quick() {
  await check('mysql2 through the proxy: user, 20000 rows, execute() (binary protocol)', () => basic(proxy()));
  await check('mysql2 straight to MariaDB with the JWT over verified TLS', () => basic(direct()));
  await check('mysql2 through the proxy: multipleStatements, two result sets', multi);
  await check('mysql2 through the proxy: changeUser() answered, password not forwarded', changeUser);
  await check('mysql2 through the proxy: compress: true', () => basic(proxy({ compress: true })));
  await check("mysql2 through the proxy: query timeout, then KILL QUERY by the handshake's threadId from a second connection",
    queryTimeoutAndKill);
}

async function pool(seconds) {
  const p = mysql.createPool(proxy({ connectionLimit: 4, maxIdle: 2, idleTimeout: 5000, enableKeepAlive: true }));
  const stop = Date.now() + seconds * 1000;
  let ok = 0;
  const errors = [];
  const worker = async (n) => {
    while (Date.now() < stop) {
      try {
        const [[r]] = await p.execute('SELECT ? + 0 AS n', [n]);
        if (Number(r.n) !== n) throw new Error(`got ${r.n}`);
        ok += 1;
      } catch (e) {
        errors.push(e.message);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await Promise.all([0, 1, 2, 3].map(worker));
  await p.end();
  const line = `mysql2 pool through the proxy, ${seconds}s on 30s tokens: ${ok} queries, ${errors.length} failed`;
  console.log(errors.length === 0 && ok > 0 ? `ok   ${line}` : `FAIL ${line}: ${errors.slice(0, 3).join('; ')}`);
}


const STREAM = 'SELECT id, payload FROM stream';
const p50 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const now = () => Number(process.hrtime.bigint()) / 1e9;
// Setup: through the proxy and direct; round trip and streaming also through the hop.
const SETUP_SIDES = ['proxy', 'direct'];
const OPEN_SIDES = HOP_PORT ? ['proxy', 'direct', 'hop'] : SETUP_SIDES;
async function interleaved(n, fn, sides = SETUP_SIDES) {
  const out = Object.fromEntries(sides.map((side) => [side, []]));
  for (let i = 0; i < n; i += 1) {
    for (const side of i % 2 === 0 ? sides : [...sides].reverse()) {
      const t = now();
      await fn(side);
      out[side].push(now() - t);
    }
  }
  return out;
}
const map = (o, f) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));

async function bench() {
  const nSetup = Number(env.S2IAM_BENCH_SETUP || 40);
  const nRtt = Number(env.S2IAM_BENCH_RTT || 2000);
  const nStream = Number(env.S2IAM_BENCH_STREAM || 5);
  const opts = { proxy: proxy(), direct: direct(), hop: direct({ port: HOP_PORT }) };
  const setup = await interleaved(nSetup, async (side) => {
    const c = await mysql.createConnection(opts[side]);
    await c.query('SELECT 1');
    await c.end();
  });
  const conns = {};
  for (const side of OPEN_SIDES) conns[side] = await mysql.createConnection(opts[side]);
  for (const side of OPEN_SIDES) for (let i = 0; i < 50; i += 1) await conns[side].query('SELECT 1');
  const rtt = await interleaved(nRtt, (side) => conns[side].query('SELECT 1'), OPEN_SIDES);
  const stream = await interleaved(nStream, (side) => conns[side].query(STREAM), OPEN_SIDES);
  for (const c of Object.values(conns)) await c.end();
  console.log(JSON.stringify({
    driver: `mysql2 ${require('mysql2/package.json').version}`, settings: 'defaults (no ssl option)',
    setup_ms: map(setup, (v) => +(p50(v) * 1e3).toFixed(3)),
    rtt_us: map(rtt, (v) => +(p50(v) * 1e6).toFixed(1)),
    stream_s: map(stream, (v) => +p50(v).toFixed(4)),
  }));
  // The pool: setup is a new pool's first connection (create, query, end); round trip
  // and streaming are a checkout, the query and the release.
  const psetup = await interleaved(nSetup, async (side) => {
    const p = mysql.createPool({ ...opts[side], connectionLimit: 1 });
    await p.query('SELECT 1');
    await p.end();
  });
  const pools = Object.fromEntries(OPEN_SIDES.map((side) => [side, mysql.createPool({ ...opts[side], connectionLimit: 1 })]));
  for (const side of OPEN_SIDES) for (let i = 0; i < 50; i += 1) await pools[side].query('SELECT 1');
  const prtt = await interleaved(nRtt, (side) => pools[side].query('SELECT 1'), OPEN_SIDES);
  const pstream = await interleaved(nStream, (side) => pools[side].query(STREAM), OPEN_SIDES);
  for (const p of Object.values(pools)) await p.end();
  console.log(JSON.stringify({
    driver: `mysql2 ${require('mysql2/package.json').version} pool`, settings: 'defaults (no ssl option)',
    setup_ms: map(psetup, (v) => +(p50(v) * 1e3).toFixed(3)),
    rtt_us: map(prtt, (v) => +(p50(v) * 1e6).toFixed(1)),
    stream_s: map(pstream, (v) => +p50(v).toFixed(4)),
  }));
}

const [mode, arg] = process.argv.slice(2);
({ pool: () => pool(Number(arg)), bench }[mode] || quick)().catch((e) => {
  console.log(`FAIL mysql2: ${e.stack}`);
  process.exitCode = 1;
});
