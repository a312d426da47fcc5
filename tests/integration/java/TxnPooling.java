// JDBC (pgjdbc, Debian's libpostgresql-jdbc-java) through pgmux in transaction pooling mode.
// Compiled and run by tests/integration/test_txn_drivers.py:
//
//   java -cp DIR:/usr/share/java/postgresql.jar TxnPooling \
//       URL USER PASSWORD THREADS ITERATIONS BATCH_ROWS
//
// URL must carry ApplicationName=txn-jdbc. pgjdbc runs SET extra_float_digits = 3 and SET
// application_name after login; every execution checks both values on whichever server
// connection it lands.
// Part 1: THREADS threads, each with its own connection (autocommit), reuse two
// PreparedStatements ITERATIONS times each, far past prepareThreshold (default 5), so pgjdbc
// switches to named server-side statements (S_1, S_2, ...) and then sends only Bind/Execute.
// Even threads reach the threshold with statement A first, odd threads with B, so the same
// server-side name means different queries in different clients. Every tenth iteration runs
// both inside an explicit transaction. Each result is checked, and the backend pid of each
// execution recorded.
// Part 2: BATCH_ROWS inserts into txn_jdbc_batch with addBatch/executeBatch (every 100 rows)
// inside one transaction, then commit.
//
// Output: one "THREAD id executions backends" line per thread, then
// "BATCH rows=N" and "SUMMARY threads=.. executions=.. max_backends_per_thread=..
// distinct_backends=.. server_prepared=true|false". Exit status 0 only if every check passed.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGStatement;

public class TxnPooling {
    /** The URL's ApplicationName; every execution checks the server connection has it. */
    static final String APP_NAME = "txn-jdbc";

    static final class WorkerResult {
        int id;
        int executions;
        Set<Integer> backends = new HashSet<>();
        boolean serverPrepared;
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("check failed: " + what);
        }
    }

    static int runA(PreparedStatement a, int i, WorkerResult r) throws SQLException {
        a.setInt(1, i);
        try (ResultSet rs = a.executeQuery()) {
            check(rs.next(), "A returned a row");
            check(rs.getInt(1) == 2 * i, "A(" + i + ") = " + rs.getInt(1));
            r.backends.add(rs.getInt(2));
            // pgjdbc sets extra_float_digits = 3 with a SET right after login
            check("3".equals(rs.getString(3)), "extra_float_digits = " + rs.getString(3));
            check(!rs.next(), "A returned one row");
        }
        return 1;
    }

    static int runB(PreparedStatement b, int id, int i, WorkerResult r) throws SQLException {
        b.setString(1, "t" + id);
        b.setInt(2, i);
        try (ResultSet rs = b.executeQuery()) {
            check(rs.next(), "B returned a row");
            String want = "t" + id + "-" + i;
            check(want.equals(rs.getString(1)), "B = " + rs.getString(1) + ", expected " + want);
            r.backends.add(rs.getInt(2));
            check(APP_NAME.equals(rs.getString(3)), "application_name = " + rs.getString(3));
        }
        return 1;
    }

    static WorkerResult worker(String url, String user, String password, int id, int iterations)
            throws Exception {
        WorkerResult r = new WorkerResult();
        r.id = id;
        try (Connection c = DriverManager.getConnection(url, user, password)) {
            c.setAutoCommit(true);
            PreparedStatement a;
            PreparedStatement b;
            String qa = "SELECT ?::int * 2, pg_backend_pid(),"
                    + " current_setting('extra_float_digits')";
            String qb = "SELECT ?::text || '-' || ?::int, pg_backend_pid(),"
                    + " current_setting('application_name')";
            a = c.prepareStatement(qa);
            b = c.prepareStatement(qb);
            for (int i = 0; i < iterations; i++) {
                boolean inTxn = i % 10 == 9;
                if (inTxn) {
                    c.setAutoCommit(false);
                }
                if (id % 2 == 0) {
                    r.executions += runA(a, i, r);
                    r.executions += runB(b, id, i, r);
                } else {
                    r.executions += runB(b, id, i, r);
                    r.executions += runA(a, i, r);
                }
                if (inTxn) {
                    c.commit();
                    c.setAutoCommit(true);
                }
                if (ThreadLocalRandom.current().nextInt(4) == 0) {
                    Thread.sleep(ThreadLocalRandom.current().nextInt(3));
                }
            }
            r.serverPrepared = a.unwrap(PGStatement.class).isUseServerPrepare()
                    && b.unwrap(PGStatement.class).isUseServerPrepare();
            // Close one (pgjdbc sends Close for S_n) and prepare another query past the
            // threshold: its new server-side name must work too.
            a.close();
            PreparedStatement a2 = c.prepareStatement("SELECT ?::int * 3, pg_backend_pid()");
            for (int i = 0; i < 10; i++) {
                a2.setInt(1, i);
                try (ResultSet rs = a2.executeQuery()) {
                    check(rs.next() && rs.getInt(1) == 3 * i, "A2(" + i + ")");
                    r.backends.add(rs.getInt(2));
                }
                r.executions++;
            }
            a2.close();
            b.close();
        }
        return r;
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: TxnPooling URL USER PASSWORD THREADS ITERATIONS BATCH_ROWS");
            System.exit(2);
        }
        String url = args[0];
        String user = args[1];
        String password = args[2];
        int threads = Integer.parseInt(args[3]);
        int iterations = Integer.parseInt(args[4]);
        int batchRows = Integer.parseInt(args[5]);

        ExecutorService pool = Executors.newFixedThreadPool(threads);
        List<Future<WorkerResult>> futures = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int id = t;
            futures.add(pool.submit(() -> worker(url, user, password, id, iterations)));
        }
        int executions = 0;
        int maxBackends = 0;
        boolean serverPrepared = true;
        Set<Integer> all = new HashSet<>();
        try {
            for (Future<WorkerResult> f : futures) {
                WorkerResult r = f.get(120, TimeUnit.SECONDS);
                System.out.println("THREAD " + r.id + " " + r.executions + " " + r.backends.size());
                executions += r.executions;
                maxBackends = Math.max(maxBackends, r.backends.size());
                serverPrepared &= r.serverPrepared;
                all.addAll(r.backends);
            }
        } finally {
            pool.shutdownNow();
        }

        try (Connection c = DriverManager.getConnection(url, user, password)) {
            c.setAutoCommit(false);
            try (PreparedStatement ps =
                    c.prepareStatement("INSERT INTO txn_jdbc_batch (id, label) VALUES (?, ?)")) {
                int pending = 0;
                for (int i = 0; i < batchRows; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row " + i);
                    ps.addBatch();
                    if (++pending == 100) {
                        int[] counts = ps.executeBatch();
                        check(counts.length == 100, "batch of 100 reported " + counts.length);
                        pending = 0;
                    }
                }
                if (pending > 0) {
                    ps.executeBatch();
                }
            }
            try (PreparedStatement q = c.prepareStatement("SELECT count(*) FROM txn_jdbc_batch");
                    ResultSet rs = q.executeQuery()) {
                check(rs.next() && rs.getInt(1) == batchRows,
                        "rows visible inside the batch transaction");
            }
            c.commit();
        }
        System.out.println("BATCH rows=" + batchRows);
        System.out.println("SUMMARY threads=" + threads + " executions=" + executions
                + " max_backends_per_thread=" + maxBackends + " distinct_backends=" + all.size()
                + " server_prepared=" + serverPrepared);
    }
}
