// MariaDB Connector/J and HikariCP against the real MariaDB, through the proxy and directly.
// Run by scripts/check-real-database as a single-file program (java -cp JARS Drivers.java)
// with the S2IAM_REALDB_* variables set:
//
//   Drivers check          one line per case: "ok   NAME" / "FAIL NAME: why"
//   Drivers pool SECONDS   a HikariCP pool through the proxy, 4 threads; zero failures
//   Drivers bench          scripts/bench-real-database: setup, SELECT 1 round trip, a large
//                          result; proxy and direct; one JSON line per driver
//
// Through the proxy Connector/J needs no password and no TLS option (useSsl is off by
// default in 2.7); useServerPrepStmts=true exercises the binary protocol.

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

public class Drivers {
    static final String USER = System.getenv("S2IAM_REALDB_USER");
    static final String EXPECTED = USER + "@%";
    static final String PROXY_URL = "jdbc:mariadb://127.0.0.1:" + System.getenv("S2IAM_REALDB_PROXY_PORT")
            + "/app?useServerPrepStmts=true";
    static final String DIRECT_URL = directUrl(System.getenv("S2IAM_REALDB_PORT"));
    // scripts/bench-real-database: a plain TCP forwarder to the server (the "hop" side: the
    // direct connection with one more process on its path and no protocol work in it).
    static final String HOP_PORT = System.getenv().getOrDefault("S2IAM_REALDB_HOP_PORT", "");
    // Setup: through the proxy and direct; round trip and streaming also through the hop.
    static final String[] SETUP_SIDES = {"proxy", "direct"};
    static final String[] OPEN_SIDES = HOP_PORT.isEmpty() ? SETUP_SIDES : new String[] {"proxy", "direct", "hop"};

    static String directUrl(String port) {
        return "jdbc:mariadb://127.0.0.1:" + port + "/app?useSsl=true&serverSslCert=" + System.getenv("S2IAM_REALDB_CA");
    }

    static String jwt() throws Exception {
        return Files.readString(Path.of(System.getenv("S2IAM_REALDB_TOKEN_FILE"))).trim();
    }

    interface Case {
        void run() throws Exception;
    }

    static void check(String name, Case c) {
        try {
            c.run();
            System.out.println("ok   " + name);
        } catch (Throwable e) {
            System.out.println("FAIL " + name + ": " + e);
        }
    }

    static void basic(Connection c) throws Exception {
        try (c; Statement s = c.createStatement()) {
            ResultSet r = s.executeQuery("SELECT CURRENT_USER()");
            r.next();
            if (!EXPECTED.equals(r.getString(1))) throw new AssertionError(r.getString(1));
            r = s.executeQuery("SELECT id, payload FROM big");
            int n = 0;
            while (r.next()) n++;
            if (n != 20000) throw new AssertionError(n + " rows");
            try (PreparedStatement p = c.prepareStatement("SELECT ? + 1, CONCAT(?, 'x')")) {
                p.setInt(1, 41);
                p.setString(2, "a");
                r = p.executeQuery();
                r.next();
                if (r.getInt(1) != 42 || !"ax".equals(r.getString(2))) throw new AssertionError("prepared");
            }
        }
    }

    static void quick() {
        check("Connector/J through the proxy: user, 20000 rows, server-side prepared statement",
                () -> basic(DriverManager.getConnection(PROXY_URL, USER, "")));
        check("Connector/J straight to MariaDB with the JWT over verified TLS",
                () -> basic(DriverManager.getConnection(DIRECT_URL, USER, jwt())));
        check("Connector/J through the proxy: useCompression=true",
                () -> basic(DriverManager.getConnection(PROXY_URL + "&useCompression=true", USER, "")));
        check("Connector/J through the proxy: allowMultiQueries, two result sets", () -> {
            try (Connection c = DriverManager.getConnection(PROXY_URL + "&allowMultiQueries=true", USER, "");
                    Statement s = c.createStatement()) {
                s.execute("SELECT 1; SELECT 2");
                if (!s.getMoreResults()) throw new AssertionError("one result set");
                ResultSet r = s.getResultSet();
                r.next();
                if (r.getInt(1) != 2) throw new AssertionError("second");
            }
        });
        check("Connector/J through the proxy: Statement.cancel() of SELECT SLEEP(30) (KILL QUERY by the handshake's id)",
                Drivers::cancel);
        check("HikariCP + Connector/J through the proxy", () -> {
            try (HikariDataSource ds = new HikariDataSource(hikari(2))) {
                basic(ds.getConnection());
            }
        });
    }

    // Statement.cancel() from another thread: Connector/J opens a second connection and
    // sends KILL QUERY with the connection id from the handshake, which through the proxy is
    // the proxy's own id for the session (the proxy greets before it opens anything
    // upstream); the proxy sends the KILL on with the server's id. (setQueryTimeout does not
    // KILL on MariaDB 10.1.2+: Connector/J wraps the query in SET STATEMENT
    // max_statement_time instead.)
    static void cancel() throws Exception {
        try (Connection c = DriverManager.getConnection(PROXY_URL, USER, "");
                Statement s = c.createStatement()) {
            java.util.concurrent.atomic.AtomicReference<Throwable> failed =
                    new java.util.concurrent.atomic.AtomicReference<>();
            Thread canceller = new Thread(() -> {
                try {
                    Thread.sleep(500);
                    s.cancel();
                } catch (Throwable e) {
                    failed.set(e);
                }
            });
            long started = System.nanoTime();
            canceller.start();
            boolean interrupted;
            try {
                ResultSet r = s.executeQuery("SELECT SLEEP(30)");
                r.next();
                interrupted = r.getInt(1) == 1; // MariaDB: an interrupted SLEEP returns 1
            } catch (java.sql.SQLException e) {
                if (e.getErrorCode() != 1317) throw e; // 1317: query execution was interrupted
                interrupted = true;
            }
            long ms = (System.nanoTime() - started) / 1_000_000;
            canceller.join();
            if (failed.get() != null) throw new AssertionError("cancel() failed: " + failed.get());
            if (!interrupted || ms > 20_000) throw new AssertionError("SLEEP(30) not cancelled (" + ms + " ms)");
            ResultSet r = s.executeQuery("SELECT 1");
            r.next();
            if (r.getInt(1) != 1) throw new AssertionError("the connection after cancel()");
        }
    }

    static HikariConfig hikari(int size) {
        HikariConfig cfg = new HikariConfig();
        cfg.setJdbcUrl(PROXY_URL);
        cfg.setUsername(USER);
        cfg.setPassword("");
        cfg.setMaximumPoolSize(size);
        cfg.setMinimumIdle(1);
        cfg.setMaxLifetime(30_000); // HikariCP's minimum; new connections take the current JWT
        cfg.setIdleTimeout(10_000);
        return cfg;
    }

    static void pool(int seconds) throws Exception {
        HikariConfig cfg = hikari(4);
        AtomicLong ok = new AtomicLong();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        long stop = System.nanoTime() + seconds * 1_000_000_000L;
        try (HikariDataSource ds = new HikariDataSource(cfg)) {
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                final int n = t;
                Thread th = new Thread(() -> {
                    while (System.nanoTime() < stop) {
                        try (Connection c = ds.getConnection();
                                PreparedStatement p = c.prepareStatement("SELECT ? + 0")) {
                            p.setInt(1, n);
                            ResultSet r = p.executeQuery();
                            r.next();
                            if (r.getInt(1) != n) throw new AssertionError("got " + r.getInt(1));
                            ok.incrementAndGet();
                        } catch (Throwable e) {
                            errors.add(e.toString());
                        }
                        try {
                            Thread.sleep(50);
                        } catch (InterruptedException e) {
                            return;
                        }
                    }
                });
                th.start();
                threads.add(th);
            }
            for (Thread th : threads) th.join();
        }
        String line = "HikariCP + Connector/J pool through the proxy (maxLifetime 30s), " + seconds
                + "s on 30s tokens: " + ok.get() + " queries, " + errors.size() + " failed";
        System.out.println(errors.isEmpty() && ok.get() > 0 ? "ok   " + line
                : "FAIL " + line + ": " + errors.subList(0, Math.min(3, errors.size())));
    }


    interface Timed {
        void run(String side) throws Exception;
    }

    static java.util.Map<String, List<Double>> interleaved(int n, Timed fn) throws Exception {
        return interleaved(n, fn, SETUP_SIDES);
    }

    static java.util.Map<String, List<Double>> interleaved(int n, Timed fn, String[] sides) throws Exception {
        java.util.Map<String, List<Double>> out = new java.util.LinkedHashMap<>();
        for (String side : sides) out.put(side, new ArrayList<>());
        List<String> reversed = new ArrayList<>(List.of(sides));
        Collections.reverse(reversed);
        for (int i = 0; i < n; i++) {
            for (String side : i % 2 == 0 ? List.of(sides) : reversed) {
                long t = System.nanoTime();
                fn.run(side);
                out.get(side).add((System.nanoTime() - t) / 1e9);
            }
        }
        return out;
    }

    static String p50(java.util.Map<String, List<Double>> m, double scale) {
        StringBuilder b = new StringBuilder("{");
        for (var e : m.entrySet()) {
            List<Double> v = new ArrayList<>(e.getValue());
            Collections.sort(v);
            if (b.length() > 1) b.append(", ");
            b.append('"').append(e.getKey()).append("\": ").append(String.format(java.util.Locale.ROOT, "%.4f", v.get(v.size() / 2) * scale));
        }
        return b.append('}').toString();
    }

    static void drain(Connection c, String sql) throws Exception {
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery(sql)) {
            while (r.next()) {
                r.getInt(1);
            }
        }
    }

    static Connection open(String side) throws Exception {
        return side.equals("proxy") ? DriverManager.getConnection(PROXY_URL, USER, "")
                : DriverManager.getConnection(side.equals("hop") ? directUrl(HOP_PORT) : DIRECT_URL, USER, jwt());
    }

    static HikariConfig hikariFor(String side, int size) throws Exception {
        HikariConfig cfg = new HikariConfig();
        if (side.equals("proxy")) {
            cfg.setJdbcUrl(PROXY_URL);
            cfg.setPassword("");
        } else {
            cfg.setJdbcUrl(side.equals("hop") ? directUrl(HOP_PORT) : DIRECT_URL);
            cfg.setPassword(jwt());
        }
        cfg.setUsername(USER);
        cfg.setMaximumPoolSize(size);
        cfg.setMinimumIdle(size);
        return cfg;
    }

    static void bench() throws Exception {
        int nSetup = Integer.parseInt(System.getenv().getOrDefault("S2IAM_BENCH_SETUP", "40"));
        int nRtt = Integer.parseInt(System.getenv().getOrDefault("S2IAM_BENCH_RTT", "2000"));
        int nStream = Integer.parseInt(System.getenv().getOrDefault("S2IAM_BENCH_STREAM", "5"));
        String stream = "SELECT id, payload FROM stream";
        // Warm the JIT and the driver's classes on both sides first.
        for (int i = 0; i < 20; i++) {
            for (String side : new String[] {"proxy", "direct"}) {
                try (Connection c = open(side)) {
                    drain(c, "SELECT 1");
                }
            }
        }
        var setup = interleaved(nSetup, side -> {
            try (Connection c = open(side)) {
                drain(c, "SELECT 1");
            }
        });
        java.util.Map<String, Connection> conns = new java.util.HashMap<>();
        for (String side : OPEN_SIDES) conns.put(side, open(side));
        for (Connection c : conns.values()) for (int i = 0; i < 200; i++) drain(c, "SELECT 1");
        var rtt = interleaved(nRtt, side -> drain(conns.get(side), "SELECT 1"), OPEN_SIDES);
        var streamed = interleaved(nStream, side -> drain(conns.get(side), stream), OPEN_SIDES);
        String version = conns.get("proxy").getMetaData().getDriverVersion();
        for (Connection c : conns.values()) c.close();
        System.out.println("{\"driver\": \"Connector/J " + version + "\", \"settings\": \"defaults (no useSsl)\", \"setup_ms\": "
                + p50(setup, 1e3) + ", \"rtt_us\": " + p50(rtt, 1e6) + ", \"stream_s\": " + p50(streamed, 1) + "}");
        // HikariCP: setup is a new pool's first connection; round trip and streaming are a
        // checkout, the query and the return to the pool.
        var hsetup = interleaved(Math.max(10, nSetup / 2), side -> {
            try (HikariDataSource ds = new HikariDataSource(hikariFor(side, 1)); Connection c = ds.getConnection()) {
                drain(c, "SELECT 1");
            }
        });
        java.util.Map<String, HikariDataSource> pools = new java.util.HashMap<>();
        for (String side : OPEN_SIDES) pools.put(side, new HikariDataSource(hikariFor(side, 1)));
        Timed checkout = side -> {
            try (Connection c = pools.get(side).getConnection()) {
                drain(c, "SELECT 1");
            }
        };
        for (int i = 0; i < 200; i++) {
            for (String side : OPEN_SIDES) checkout.run(side);
        }
        var hrtt = interleaved(nRtt, checkout, OPEN_SIDES);
        var hstream = interleaved(nStream, side -> {
            try (Connection c = pools.get(side).getConnection()) {
                drain(c, stream);
            }
        }, OPEN_SIDES);
        for (HikariDataSource ds : pools.values()) ds.close();
        // Debian's HikariCP jar has no Implementation-Version, only the OSGi Bundle-Version.
        String hikari;
        try (var jar = new java.util.jar.JarFile(Path.of(
                HikariDataSource.class.getProtectionDomain().getCodeSource().getLocation().toURI()).toFile())) {
            hikari = jar.getManifest().getMainAttributes().getValue("Bundle-Version");
        }
        System.out.println("{\"driver\": \"HikariCP " + hikari
                + " + Connector/J\", \"settings\": \"defaults\", \"setup_ms\": " + p50(hsetup, 1e3) + ", \"rtt_us\": "
                + p50(hrtt, 1e6) + ", \"stream_s\": " + p50(hstream, 1) + "}");
    }

    public static void main(String[] args) throws Exception {
        if (args[0].equals("bench")) {
            bench();
        } else if (args[0].equals("pool")) {
            pool(Integer.parseInt(args[1]));
        } else {
            quick();
        }
    }
}
