//! The demo policy's row rules (`policies/crm.yaml`), written out as plain SQL over the stored
//! data from what the rules mean, for tests that compare what a role gets with what it should
//! get. Deliberately not pgvakt's own predicates.

use tokio_postgres::Client;

/// A condition on `contacts` aliased `c` that holds for the people `role` may see.
pub fn visible(role: &str) -> String {
    let not_restricted =
        "NOT EXISTS (SELECT 1 FROM public.restrictions r WHERE r.contact_id = c.id \
                          AND (r.lifted_at IS NULL OR r.lifted_at > now()))";
    let within_retention =
        "(c.last_activity_at IS NULL OR c.last_activity_at >= now() - interval '10 years')";
    let consented = "EXISTS (SELECT 1 FROM public.consents k WHERE k.contact_id = c.id \
                     AND k.purpose IN ('newsletter', 'marketing') \
                     AND (k.withdrawn_at IS NULL OR k.withdrawn_at > now()))";
    match role {
        "admin" | "dpo" => "true".to_owned(),
        "sales" => format!("{not_restricted} AND {within_retention}"),
        "marketing" => format!("{consented} AND {not_restricted} AND {within_retention}"),
        // secretary, and the default role: restricted people are hidden from everyone else.
        _ => not_restricted.to_owned(),
    }
}

/// The ids of the people `role` may see.
pub fn visible_ids(role: &str) -> String {
    format!("SELECT c.id FROM public.contacts c WHERE {}", visible(role))
}

/// The values of the first column `sql` returns, read directly (as the superuser).
pub async fn ids(direct: &Client, sql: &str) -> Vec<i64> {
    direct
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A person hidden from `role` and an id nobody has: what an attack tries to tell apart.
pub async fn hidden_and_absent(direct: &Client, role: &str) -> (i64, i64) {
    let visible = ids(direct, &visible_ids(role)).await;
    let all = ids(direct, "SELECT id FROM contacts ORDER BY id").await;
    let hidden = all
        .iter()
        .copied()
        .find(|i| !visible.contains(i))
        .expect("someone hidden");
    (hidden, all.last().copied().unwrap_or(0) + 1000)
}
