// node-postgres through pgvakt: parameterised queries, named prepared statements, many queries
// in flight on one connection, binary results, refusals. Expected values come from the same
// query on a direct connection, with the demo policy's masks applied for the secretary.
'use strict';
const fs = require('fs');
const { Client, types } = require('pg');

// Dates and timestamps as PostgreSQL's text, so the comparison does not depend on time zones.
types.setTypeParser(1082, (v) => v);
types.setTypeParser(1184, (v) => v);

const env = process.env;
const role = env.PGVAKT_ROLE;
const unrestricted = role === 'admin';
const columns = ['id', 'first_name', 'last_name', 'email', 'date_of_birth', 'bank_account', 'created_at'];
const contactsSql = `SELECT ${columns.join(', ')} FROM contacts`;
const failures = [];

function ok(what) { console.log(`ok: ${what}`); }
function fail(what, detail) { failures.push(what); console.error(`FAIL: ${what}: ${detail}`); }
function equal(what, got, want) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (!want || (Array.isArray(want) && want.length === 0)) fail(what, 'PostgreSQL returned nothing');
  else if (g !== w) fail(what, `got ${g.slice(0, 600)}\n  want ${w.slice(0, 600)}`);
  else ok(what);
}

function mask(row) {
  if (unrestricted) return row;
  const out = { ...row };
  if (out.bank_account != null) out.bank_account = '***';
  if (out.date_of_birth != null) out.date_of_birth = `${out.date_of_birth.slice(0, 4)}-01-01`;
  return out;
}

const proxyConfig = {
  host: env.PGVAKT_PROXY_HOST, port: Number(env.PGVAKT_PROXY_PORT), database: env.PGVAKT_DATABASE,
  user: env.PGVAKT_USER, password: env.PGVAKT_PASSWORD,
  ssl: { ca: fs.readFileSync(env.PGVAKT_CA_FILE), rejectUnauthorized: env.PGVAKT_SSLMODE !== 'require' },
};
const proxy = new Client(proxyConfig);
const direct = new Client({
  host: env.PGVAKT_DIRECT_HOST, port: Number(env.PGVAKT_DIRECT_PORT), database: env.PGVAKT_DATABASE,
  user: env.PGVAKT_ADMIN_USER, password: env.PGVAKT_ADMIN_PASSWORD, ssl: false,
});

async function want(where = '', values = []) {
  return (await direct.query(`${contactsSql} ${where} ORDER BY id`, values)).rows.map(mask);
}

async function parameterised() {
  const got = await proxy.query(`${contactsSql} WHERE id = $1 OR last_name = $2 ORDER BY id`, [5, 'Hansen']);
  equal('parameterised query', got.rows, await want('WHERE id = $1 OR last_name = $2', [5, 'Hansen']));
  const dg = await direct.query(`${contactsSql} LIMIT 1`);
  equal('field names and type OIDs', got.fields.map((f) => [f.name, f.dataTypeID]),
    dg.fields.map((f) => [f.name, f.dataTypeID]));
  const all = await proxy.query(`${contactsSql} ORDER BY id`);
  equal('simple query over all contacts', all.rows, await want());
}

async function named() {
  const rows = [];
  for (let i = 1; i <= 12; i++) {
    const r = await proxy.query({ name: 'contact_by_id', text: `${contactsSql} WHERE id = $1`, values: [i] });
    rows.push(...r.rows);
  }
  equal('named prepared statement reused 12 times', rows, await want('WHERE id BETWEEN 1 AND 12'));
}

// node-postgres' pipeline mode writes every query (Parse/Bind/Describe/Execute/Sync) without
// waiting for the previous one's results; a failing one must not disturb its neighbours.
async function pipelined() {
  const pipe = new Client({ ...proxyConfig, pipeline: true });
  await pipe.connect();
  const ids = Array.from({ length: 40 }, (_, i) => i + 1);
  const bad = unrestricted ? 'SELECT 1/0' : "SELECT pg_read_file('x')";
  const badCode = unrestricted ? '22012' : '42501';
  const queries = ids.map((i) => (i === 20
    ? pipe.query(bad).then(() => 'ran', (e) => e.code)
    : pipe.query(i % 2 ? { name: 'piped', text: `${contactsSql} WHERE id = $1`, values: [i] }
      : { text: `${contactsSql} WHERE id = $1`, values: [i] })));
  const results = await Promise.all(queries);
  equal(`failing query in the middle of a pipeline gets ${badCode}`, results[19], badCode);
  equal('40 pipelined queries', results.filter((r) => r.rows).flatMap((r) => r.rows),
    await want('WHERE id BETWEEN 1 AND 40 AND id <> 20'));
  await pipe.end();
}

async function binary() {
  const sql = 'SELECT id, first_name, bank_account FROM contacts WHERE id <= $1 ORDER BY id';
  const got = await proxy.query({ text: sql, values: [10], binary: true });
  const dgot = await direct.query({ text: sql, values: [10], binary: true });
  const norm = (rows) => rows.map((r) => ({ ...r, id: String(r.id), first_name: String(r.first_name),
    bank_account: r.bank_account === null ? null : String(r.bank_account) }));
  equal('binary results', norm(got.rows), norm(dgot.rows).map(mask));
}

async function writes() {
  const label = `node-${role}`;
  await proxy.query('BEGIN');
  const ins = await proxy.query(
    'INSERT INTO scratch (label, amount, day, doc, tags) VALUES ($1, $2, $3, $4, $5) RETURNING id',
    [label, '42.10', '2020-02-02', { k: 'v' }, ['a', 'b']]);
  await proxy.query('COMMIT');
  const back = await direct.query('SELECT id, label, amount, day, doc, tags FROM scratch WHERE label = $1', [label]);
  equal('insert with RETURNING', back.rows,
    [{ id: ins.rows[0].id, label, amount: '42.10', day: '2020-02-02', doc: { k: 'v' }, tags: ['a', 'b'] }]);
}

async function errorsAndRefusals() {
  const cases = unrestricted
    ? [['SELECT 1/0', [], '22012'], ['SELECT nosuch FROM contacts', [], '42703']]
    : [['SELECT pg_read_file($1)', ['x'], '42501'],
      ['UPDATE contacts SET bank_account = $1 WHERE id = $2', ['x', 1], '42501'],
      ['SELECT 1/0', [], '22012']];
  for (const [sql, values, code] of cases) {
    try {
      await proxy.query(sql, values);
      fail(`error for ${sql}`, 'it ran');
    } catch (e) {
      if (e.code === code) ok(`${sql} fails with ${code}`);
      else fail(`error for ${sql}`, `${e.code} ${e.message}`);
    }
    equal(`session after ${sql}`, (await proxy.query(`${contactsSql} WHERE id = $1`, [3])).rows,
      await want('WHERE id = 3'));
  }
}

(async () => {
  await proxy.connect();
  await direct.connect();
  for (const step of [parameterised, named, pipelined, binary, writes, errorsAndRefusals]) {
    try {
      await step();
    } catch (e) {
      fail(step.name, `${e.code || ''} ${e.stack}`);
    }
  }
  await proxy.end();
  await direct.end();
  if (failures.length) {
    console.error(`node-postgres as ${role}: ${failures.length} failed: ${failures.join(', ')}`);
    process.exit(1);
  }
  console.log(`node-postgres: all checks passed as ${role}`);
})();
