//! The `statistics_views` capability decides: column statistics (most common values, histogram
//! bounds) hold stored values, so a restricted role reads pg_stats and the pg_stat_* views only
//! when its policy says so.

use crate::common;

use common::{sqlstate, Env, EnvOptions};

/// Two restricted roles that differ only in `statistics_views`.
const POLICY: &str = "
default_role: nobody
inventory:
  tables:
    companies: {personal: false}
    contacts:
      subject_key: id
      columns: {id: none, first_name: identity, bank_account: financial}
    activities: {subject_key: contact_id}
    consents: {subject_key: contact_id}
roles:
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

#[tokio::test]
async fn statistics_views_need_the_capability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("stats.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(50),
        policy_file: Some(policy),
        ..Default::default()
    })
    .await;
    env.cluster
        .connect("crm")
        .await
        .expect("direct")
        .batch_execute("ANALYZE contacts")
        .await
        .expect("analyze");
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
