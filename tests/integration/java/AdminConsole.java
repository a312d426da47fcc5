// The admin console through pgjdbc: typed columns read with the getters an application would
// use, a PreparedStatement reused past prepareThreshold (a named server-side statement, binary
// results), an error with its SQLSTATE, commands without a result set. Prints OK or fails.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;

public class AdminConsole {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SHOW POOLS")) {
                ResultSetMetaData md = rs.getMetaData();
                check(md.getColumnType(rs.findColumn("cl_active")) == Types.BIGINT, "cl_active type");
                check(md.getColumnType(rs.findColumn("database")) == Types.VARCHAR, "database type");
                boolean found = false;
                while (rs.next()) {
                    if ("appdb".equals(rs.getString("database"))) {
                        found = true;
                        check(rs.getLong("cl_active") >= 1, "cl_active >= 1");
                    }
                }
                check(found, "appdb pool listed");
            }
            try (PreparedStatement ps = c.prepareStatement("SHOW CLIENTS")) {
                for (int i = 0; i < 7; i++) {
                    int mine = 0;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            if ("admin".equals(rs.getString("state"))) {
                                mine++;
                                Timestamp t = rs.getTimestamp("connect_time");
                                check(t != null && t.getTime() > 1600000000000L, "connect_time");
                                check(rs.getInt("port") > 0, "port");
                                check(rs.getLong("wait_us") == 0, "wait_us");
                            }
                        }
                    }
                    check(mine == 1, "one admin session, run " + i);
                }
            }
            try (Statement st = c.createStatement()) {
                try (ResultSet rs = st.executeQuery("SHOW CONFIG")) {
                    boolean seen = false;
                    while (rs.next()) {
                        if ("query_wait_timeout".equals(rs.getString("key"))) {
                            seen = rs.getBoolean("changeable");
                        }
                    }
                    check(seen, "query_wait_timeout changeable");
                }
                try (ResultSet rs = st.executeQuery("SHOW VERSION")) {
                    check(rs.next() && rs.getString(1).startsWith("pgmux "), "version");
                }
                try {
                    st.executeQuery("SELECT 1");
                    check(false, "SELECT 1 accepted");
                } catch (SQLException e) {
                    check("42601".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
                }
                check(!st.execute("PAUSE appdb"), "PAUSE has no result set");
                check(!st.execute("RESUME appdb"), "RESUME has no result set");
                check(!st.execute("SET query_wait_timeout = '20s'"), "SET has no result set");
            }
        }
        System.out.println("OK");
    }
}
