// node-postgres (pg from npm) through pgmux in transaction pooling mode. Run by
// tests/integration/test_txn_drivers.py:
//
//   PGHOST=127.0.0.1 PGPORT=... PGUSER=app PGPASSWORD=... PGDATABASE=appdb node script.js QUERIES
//
// A pg.Pool of 20 runs QUERIES concurrent queries, each with a named prepared statement
// ({name, text, values}): pg parses a name once per connection and afterwards sends only
// Bind/Execute, so every reuse that lands on another server connection needs pgmux to
// prepare it there. 'q1' and 'q2' are used by every connection; every fifth query runs inside
// an explicit transaction that inserts into txn_node_ids with the named statement 'ins'.
// Prints one JSON line {"queries":..,"inserted":..,"backends":..}; exits 1 on any error or
// wrong result.

const { Pool } = require('pg');

async function main() {
  const total = parseInt(process.argv[2] || '400', 10);
  const pool = new Pool({ max: 20, idleTimeoutMillis: 0, connectionTimeoutMillis: 30000 });
  const backends = new Set();
  let inserted = 0;

  async function one(i) {
    if (i % 5 === 4) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const r = await client.query({
          name: 'ins',
          text: 'INSERT INTO txn_node_ids (id) VALUES ($1) RETURNING id, pg_backend_pid() AS pid',
          values: [i],
        });
        if (r.rows[0].id !== i) throw new Error(`ins(${i}) returned ${JSON.stringify(r.rows)}`);
        const again = await client.query({ name: 'q1', text: Q1, values: [i] });
        if (again.rows[0].pid !== r.rows[0].pid) {
          throw new Error('a transaction moved between server connections');
        }
        await client.query('COMMIT');
        inserted++;
      } catch (e) {
        await client.query('ROLLBACK').catch(() => {});
        throw e;
      } finally {
        client.release();
      }
      return;
    }
    const which = i % 2
      ? { name: 'q1', text: Q1, values: [i] }
      : { name: 'q2', text: Q2, values: [`v${i}`, i] };
    const r = await pool.query(which);
    const row = r.rows[0];
    if (which.name === 'q1' ? row.v !== i * 2 : row.v !== `v${i}:${i}`) {
      throw new Error(`${which.name}(${i}) returned ${JSON.stringify(row)}`);
    }
    backends.add(row.pid);
  }

  const Q1 = 'SELECT $1::int * 2 AS v, pg_backend_pid() AS pid';
  const Q2 = "SELECT $1::text || ':' || $2::int AS v, pg_backend_pid() AS pid";

  try {
    // Rounds of concurrent queries, so every pool connection reuses its statements many times.
    const batch = 100;
    for (let start = 0; start < total; start += batch) {
      const jobs = [];
      for (let i = start; i < Math.min(total, start + batch); i++) jobs.push(one(i));
      await Promise.all(jobs);
    }
  } finally {
    await pool.end();
  }
  console.log(JSON.stringify({ queries: total, inserted, backends: backends.size, poolMax: 20 }));
}

main().catch((e) => {
  console.error('FAILED:', e && e.stack ? e.stack : e);
  process.exit(1);
});
