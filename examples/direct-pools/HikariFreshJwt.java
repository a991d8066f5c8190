// A HikariCP pool straight to SingleStore (no proxy): every new physical connection reads
// the current database JWT from the s2iam sidecar's token file ([[token]] sink), as the
// Cloud SQL connectors do.
//
// The JWT is the password, sent with mysql_clear_password (TLS required). The server checks
// it at login only: an open connection outlives its token, a *new* one needs a fresh token,
// so the data source reads it in getConnection(), which HikariCP calls for every physical
// connection it opens. maxLifetime is about the server (wait_timeout, failover), not the
// token.
//
// Settings (environment): S2_HOST, S2_PORT, S2_USER ("*" on SingleStore: the JWT's user),
// S2_DATABASE, S2_CA (CA file, verified), S2IAM_TOKEN_FILE, S2_POOL_MAX_LIFETIME (seconds,
// 1800; HikariCP's minimum is 30).
// Classpath: mariadb-java-client, HikariCP, slf4j-api (Debian: libmariadb-java,
// libhikaricp-java).
//
//   java -cp "$CP" HikariFreshJwt.java                 one query
//   java -cp "$CP" HikariFreshJwt.java --seconds 120   4 threads through the pool
//
// Tested by scripts/check-real-database against a real MariaDB server with JWT login.

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.mariadb.jdbc.MariaDbDataSource;

public class HikariFreshJwt {
    /** A data source whose every physical connection logs in with the current JWT. */
    static class JwtDataSource extends MariaDbDataSource {
        private final String user;
        private final Path tokenFile;

        JwtDataSource(String url, String user, Path tokenFile) throws SQLException {
            super(url);
            this.user = user;
            this.tokenFile = tokenFile;
        }

        @Override
        public Connection getConnection() throws SQLException {
            try {
                return super.getConnection(user, Files.readString(tokenFile).trim());
            } catch (java.io.IOException e) {
                throw new SQLException("cannot read the s2iam token file " + tokenFile, e);
            }
        }
    }

    static HikariDataSource pool() throws SQLException {
        String env = System.getenv("S2_PORT");
        String url = "jdbc:mariadb://" + System.getenv("S2_HOST") + ":" + (env == null ? "3306" : env) + "/"
                + System.getenv("S2_DATABASE") + "?useSsl=true&serverSslCert=" + System.getenv("S2_CA");
        HikariConfig cfg = new HikariConfig();
        cfg.setDataSource(new JwtDataSource(url, System.getenv("S2_USER"),
                Path.of(System.getenv("S2IAM_TOKEN_FILE"))));
        cfg.setMaximumPoolSize(4);
        // Replace connections after this long (below the server's wait_timeout); the token
        // does not need it: a session outlives its JWT.
        String life = System.getenv("S2_POOL_MAX_LIFETIME");
        cfg.setMaxLifetime((life == null ? 1800 : Long.parseLong(life)) * 1000);
        return new HikariDataSource(cfg);
    }

    public static void main(String[] args) throws Exception {
        int seconds = args.length == 2 && args[0].equals("--seconds") ? Integer.parseInt(args[1]) : 0;
        long stop = System.nanoTime() + seconds * 1_000_000_000L;
        AtomicLong ok = new AtomicLong();
        List<String> errors = Collections.synchronizedList(new ArrayList<>());
        try (HikariDataSource ds = pool()) {
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                final int n = t;
                Thread th = new Thread(() -> {
                    do {
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
                    } while (System.nanoTime() < stop);
                });
                th.start();
                threads.add(th);
            }
            for (Thread th : threads) th.join();
        }
        System.out.println("HikariCP pool, fresh JWT per connection: " + ok.get() + " queries, "
                + errors.size() + " failed " + errors.subList(0, Math.min(3, errors.size())));
        System.exit(errors.isEmpty() && ok.get() > 0 ? 0 : 1);
    }
}
