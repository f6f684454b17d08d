//! The demo policy's row rules (`policies/crm.yaml`), written out as plain SQL over the stored
//! data from what the rules mean, for tests that compare what a role gets with what it should
//! get. Deliberately not pgvakt's own predicates.

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
