//! The `statistics_views` capability decides: column statistics (most common values, histogram
//! bounds) hold stored values, so a restricted role reads pg_stats and the pg_stat_* views only
//! when its policy says so.

use crate::common;

use common::policy_files::{demo_with_policy, NAMES_AND_ACCOUNTS};
use common::sqlstate;

/// The roles and grants of `policy`.
const ROLES: &str = "roles:
  nobody: {default: block}
  clerk:
    description: Reads names; no statistics.
    categories: {identity: allow}
  analyst:
    description: Reads names and the planner's statistics.
    categories: {identity: allow}
    capabilities: [statistics_views]
grants:
  - {user: secretary, role: clerk}
  - {user: sales, role: analyst}
";

/// Two restricted roles that differ only in `statistics_views`.
fn policy() -> String {
    format!("\ndefault_role: nobody\n{NAMES_AND_ACCOUNTS}{ROLES}")
}

#[tokio::test]
async fn statistics_views_need_the_capability() {
    let (env, _policy) = demo_with_policy(50, "stats.yaml", &policy()).await;
    env.setup_crm("ANALYZE contacts", "analyze").await;
    let statements = [
        "SELECT attname FROM pg_stats WHERE tablename = 'contacts'",
        "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'contacts'",
        "SELECT count(*) FROM pg_catalog.pg_stats",
    ];
    let clerk = env
        .connect("secretary", "secretary", "crm")
        .await
        .expect("clerk");
    for sql in statements {
        let e = clerk.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), "42501", "{sql}: {}", common::message(&e));
    }
    let analyst = env.connect("sales", "sales", "crm").await.expect("analyst");
    for sql in statements {
        analyst
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", common::message(&e)));
    }
}
