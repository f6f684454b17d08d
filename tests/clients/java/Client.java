// pgjdbc through pgvakt: PreparedStatement reuse past prepareThreshold (server-prepared,
// binary transfer), batch inserts, generated keys, ResultSetMetaData, transactions and
// savepoints, CopyManager, refusals. Run in source-launcher mode:
//   java -cp /usr/share/java/postgresql.jar Client.java
// Expected values come from the same statement on a direct connection, with the demo policy's
// masks applied for the secretary (bank account redacted, birth date year only).
import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.nio.charset.StandardCharsets;
import java.sql.*;
import java.util.*;
import org.postgresql.PGConnection;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class Client {
    static final Map<String, String> ENV = System.getenv();
    static final String ROLE = ENV.get("PGVAKT_ROLE");
    static final boolean UNRESTRICTED = ROLE.equals("admin");
    static final String CONTACTS =
        "SELECT id, first_name, last_name, email, date_of_birth, bank_account, created_at FROM contacts";
    static final List<String> failures = new ArrayList<>();

    static Connection proxy() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", ENV.get("PGVAKT_USER"));
        p.setProperty("password", ENV.get("PGVAKT_PASSWORD"));
        p.setProperty("sslmode", ENV.get("PGVAKT_SSLMODE"));
        p.setProperty("sslrootcert", ENV.get("PGVAKT_CA_FILE"));
        p.setProperty("prepareThreshold", "3");
        return DriverManager.getConnection("jdbc:postgresql://" + ENV.get("PGVAKT_PROXY_HOST") + ":"
            + ENV.get("PGVAKT_PROXY_PORT") + "/" + ENV.get("PGVAKT_DATABASE"), p);
    }

    static Connection direct() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", ENV.get("PGVAKT_ADMIN_USER"));
        p.setProperty("password", ENV.get("PGVAKT_ADMIN_PASSWORD"));
        p.setProperty("sslmode", "disable");
        return DriverManager.getConnection("jdbc:postgresql://" + ENV.get("PGVAKT_DIRECT_HOST") + ":"
            + ENV.get("PGVAKT_DIRECT_PORT") + "/" + ENV.get("PGVAKT_DATABASE"), p);
    }

    static void ok(String what) { System.out.println("ok: " + what); }

    static void fail(String what, String detail) {
        failures.add(what);
        System.err.println("FAIL: " + what + ": " + detail);
    }

    static void equal(String what, Object got, Object want) {
        if (want == null || (want instanceof Collection && ((Collection<?>) want).isEmpty())) {
            fail(what, "PostgreSQL returned nothing; the comparison would prove nothing");
        } else if (!got.equals(want)) {
            String g = String.valueOf(got), w = String.valueOf(want);
            fail(what, "got " + g.substring(0, Math.min(600, g.length())) + "\n  want "
                + w.substring(0, Math.min(600, w.length())));
        } else {
            ok(what);
        }
    }

    /** Rows as strings (pgjdbc's own rendering, from text or binary transfer). */
    static List<List<String>> rows(ResultSet rs, boolean mask) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<List<String>> out = new ArrayList<>();
        while (rs.next()) {
            List<String> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                String v = rs.getString(i);
                String col = md.getColumnLabel(i);
                if (mask && !UNRESTRICTED && v != null) {
                    if (col.equals("bank_account")) v = "***";
                    if (col.equals("date_of_birth")) v = v.substring(0, 4) + "-01-01";
                }
                row.add(v);
            }
            out.add(row);
        }
        return out;
    }

    static List<List<String>> want(Connection d, String sql) throws SQLException {
        try (Statement s = d.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            return rows(rs, true);
        }
    }

    static void preparedReuse(Connection c, Connection d) throws SQLException {
        List<List<String>> got = new ArrayList<>();
        boolean serverPrepared = false;
        try (PreparedStatement ps = c.prepareStatement(CONTACTS + " WHERE id = ?")) {
            for (long id = 1; id <= 10; id++) {
                ps.setLong(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    got.addAll(rows(rs, false));
                }
            }
            serverPrepared = ps.unwrap(PGStatement.class).isUseServerPrepare();
        }
        equal("PreparedStatement reused 10 times (threshold 3)", got,
            want(d, CONTACTS + " WHERE id BETWEEN 1 AND 10 ORDER BY id"));
        if (serverPrepared) ok("statement became server-prepared"); else fail("server prepare", "never used");
        try (PreparedStatement ps = c.prepareStatement(CONTACTS + " WHERE last_name = ? ORDER BY id")) {
            ps.setString(1, "Hansen");
            for (int i = 0; i < 4; i++) {
                try (ResultSet rs = ps.executeQuery()) {
                    got = rows(rs, false);
                }
            }
        }
        equal("text parameter, reused", got, want(d, CONTACTS + " WHERE last_name = 'Hansen' ORDER BY id"));
    }

    static List<List<String>> scratch(Connection d, String label) throws SQLException {
        return want(d, "SELECT label, amount, day, tags FROM scratch WHERE label = '" + label + "' ORDER BY id");
    }

    static void batchAndKeys(Connection c, Connection d) throws SQLException {
        String label = "jdbc-" + ROLE;
        try (PreparedStatement ps = c.prepareStatement(
                "INSERT INTO scratch (label, amount, day) VALUES (?, ?, ?)")) {
            for (int i = 0; i < 7; i++) {
                ps.setString(1, label);
                ps.setBigDecimal(2, new java.math.BigDecimal(i + ".25"));
                ps.setDate(3, java.sql.Date.valueOf("2021-03-0" + (i + 1)));
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            equal("batch update counts", Arrays.toString(counts), "[1, 1, 1, 1, 1, 1, 1]");
        }
        List<List<String>> back = scratch(d, label);
        List<List<String>> sent = new ArrayList<>();
        for (int i = 0; i < 7; i++) sent.add(Arrays.asList(label, i + ".25", "2021-03-0" + (i + 1), null));
        equal("batch insert wrote what was sent", back, sent);

        List<String> keys = new ArrayList<>();
        try (PreparedStatement ps = c.prepareStatement(
                "INSERT INTO scratch (label) VALUES (?)", new String[] {"id"})) {
            for (int i = 0; i < 4; i++) {
                ps.setString(1, label + "-key");
                ps.executeUpdate();
                try (ResultSet rs = ps.getGeneratedKeys()) {
                    while (rs.next()) keys.add(rs.getString(1));
                }
            }
        }
        List<String> wantKeys = new ArrayList<>();
        for (List<String> r : want(d, "SELECT id FROM scratch WHERE label = '" + label + "-key' ORDER BY id"))
            wantKeys.add(r.get(0));
        equal("generated keys", keys, wantKeys);
    }

    static void metadata(Connection c, Connection d) throws SQLException {
        String sql = CONTACTS + " WHERE id = 1";
        List<String> got = new ArrayList<>(), want = new ArrayList<>();
        for (Object[] pair : new Object[][] {{c, got}, {d, want}}) {
            try (Statement s = ((Connection) pair[0]).createStatement(); ResultSet rs = s.executeQuery(sql)) {
                ResultSetMetaData md = rs.getMetaData();
                @SuppressWarnings("unchecked") List<String> out = (List<String>) pair[1];
                for (int i = 1; i <= md.getColumnCount(); i++) {
                    out.add(md.getColumnLabel(i) + " " + md.getColumnTypeName(i) + " " + md.getColumnType(i)
                        + " " + md.getColumnClassName(i) + " " + md.getPrecision(i) + " " + md.getScale(i));
                }
            }
        }
        equal("ResultSetMetaData names and types", got, want);
        // Table and nullability come from the column origins in RowDescription: for masked
        // columns pgvakt reports the stored column's, as PostgreSQL does on a direct connection.
        // Both the simple statement and a server-prepared one (past prepareThreshold) are read.
        String prepared = CONTACTS + " WHERE id = ?";
        for (int round = 0; round < 5; round++) {
            List<String> g = new ArrayList<>(), w = new ArrayList<>();
            for (Object[] pair : new Object[][] {{c, g}, {d, w}}) {
                Connection conn = (Connection) pair[0];
                @SuppressWarnings("unchecked") List<String> out = (List<String>) pair[1];
                try (PreparedStatement ps = conn.prepareStatement(round == 0 ? sql : prepared)) {
                    if (round > 0) ps.setInt(1, 1);
                    try (ResultSet rs = ps.executeQuery()) {
                        ResultSetMetaData md = rs.getMetaData();
                        for (int i = 1; i <= md.getColumnCount(); i++)
                            out.add(md.getColumnName(i) + " " + md.getTableName(i) + " " + md.getColumnType(i)
                                + " " + md.isNullable(i) + " " + md.isAutoIncrement(i));
                    }
                }
            }
            equal("ResultSetMetaData table, nullability, auto increment (" + (round == 0 ? "simple" : "prepared " + round) + ")", g, w);
        }
    }

    static void transactions(Connection c, Connection d) throws SQLException {
        String label = "jdbc-tx-" + ROLE;
        c.setAutoCommit(false);
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO scratch (label, amount) VALUES (?, ?)")) {
            ps.setString(1, label);
            ps.setInt(2, 1);
            ps.executeUpdate();
            Savepoint sp = c.setSavepoint();
            ps.setInt(2, 2);
            ps.executeUpdate();
            c.rollback(sp);
            ps.setInt(2, 3);
            ps.executeUpdate();
            c.commit();
            ps.setInt(2, 4);
            ps.executeUpdate();
            c.rollback();
        } finally {
            c.setAutoCommit(true);
        }
        equal("transactions and savepoints",
            want(d, "SELECT amount FROM scratch WHERE label = '" + label + "' ORDER BY id"),
            Arrays.asList(Arrays.asList("1.00"), Arrays.asList("3.00")));
    }

    static String copyOut(Connection conn, String sql) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        conn.unwrap(PGConnection.class).getCopyAPI().copyOut(sql, out);
        return out.toString(StandardCharsets.UTF_8);
    }

    static void copy(Connection c, Connection d) throws Exception {
        String label = "jdbc-copy-" + ROLE;
        CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
        String data = label + "\t1.50\t2022-01-31\t{a,b}\n" + label + "\t\\N\t\\N\t\\N\n";
        long n = cm.copyIn("COPY scratch (label, amount, day, tags) FROM STDIN", new StringReader(data));
        equal("CopyManager.copyIn row count", n, 2L);
        equal("CopyManager.copyIn rows", copyOut(d,
            "COPY (SELECT label, amount, day, tags FROM scratch WHERE label = '" + label + "' ORDER BY id) TO STDOUT"),
            data);
        String masked = UNRESTRICTED ? CONTACTS
            : "SELECT id, first_name, last_name, email, make_date(extract(year FROM date_of_birth)::int, 1, 1),"
              + " CASE WHEN bank_account IS NULL THEN NULL ELSE '***' END, created_at FROM contacts";
        equal("CopyManager.copyOut", copyOut(c, "COPY (" + CONTACTS + " ORDER BY id) TO STDOUT (FORMAT csv)"),
            copyOut(d, "COPY (" + masked + " ORDER BY id) TO STDOUT (FORMAT csv)"));
    }

    static void errors(Connection c, Connection d) throws SQLException {
        String[][] cases = UNRESTRICTED
            ? new String[][] {{"SELECT 1/0", "22012"}, {"SELECT nosuch FROM contacts", "42703"}}
            : new String[][] {{"SELECT pg_read_file('x')", "42501"},
                              {"UPDATE contacts SET bank_account = 'x' WHERE id = 1", "42501"},
                              {"SELECT 1/0", "22012"}};
        for (String[] k : cases) {
            for (boolean prepared : new boolean[] {false, true}) {
                try {
                    if (prepared) {
                        try (PreparedStatement ps = c.prepareStatement(k[0])) { ps.execute(); }
                    } else {
                        try (Statement s = c.createStatement()) { s.execute(k[0]); }
                    }
                    fail("error for " + k[0], "it ran");
                } catch (SQLException e) {
                    equal(k[0] + (prepared ? " (prepared)" : "") + " fails with", e.getSQLState(), k[1]);
                }
                try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(CONTACTS + " WHERE id = 2")) {
                    equal("connection usable after " + k[0], rows(rs, false), want(d, CONTACTS + " WHERE id = 2"));
                }
            }
        }
    }

    interface Step { void run(Connection c, Connection d) throws Exception; }

    public static void main(String[] args) throws Exception {
        Map<String, Step> steps = new LinkedHashMap<>();
        steps.put("prepared statement reuse", Client::preparedReuse);
        steps.put("batch and generated keys", Client::batchAndKeys);
        steps.put("metadata", Client::metadata);
        steps.put("transactions", Client::transactions);
        steps.put("copy", Client::copy);
        steps.put("errors", Client::errors);
        try (Connection c = proxy(); Connection d = direct()) {
            for (Map.Entry<String, Step> s : steps.entrySet()) {
                try {
                    s.getValue().run(c, d);
                } catch (Exception e) {
                    fail(s.getKey(), e.toString());
                    if (!c.getAutoCommit()) c.rollback();
                }
            }
        }
        if (!failures.isEmpty()) {
            System.err.println("pgjdbc as " + ROLE + ": " + failures.size() + " failed: " + failures);
            System.exit(1);
        }
        System.out.println("pgjdbc: all checks passed as " + ROLE);
    }
}
