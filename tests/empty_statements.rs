//! Texts without a statement (empty, only spaces, only a comment) are valid queries: PostgreSQL
//! answers EmptyQueryResponse and the session goes on. psycopg's own test suite sends them; they
//! once aborted the whole proxy (a null pointer from PostgreSQL's scanner read as a slice).

use crate::common;

use common::{Env, EnvOptions};
use tokio_postgres::SimpleQueryMessage;

#[tokio::test]
async fn empty_texts_get_postgresqls_answer_for_every_role_and_the_proxy_lives_on() {
    let keys = tempfile::tempdir().expect("tempdir");
    // With an audit trail: deciding whether a statement may touch personal data scans it.
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(5),
        extra_yaml: common::audit_yaml(keys.path()),
        ..Default::default()
    })
    .await;
    for user in ["admin", "secretary"] {
        let c = env.connect(user, user, "crm").await.expect("connect");
        for text in ["", "   ", "\n\t", "-- nothing", "/* nothing */", ";"] {
            let got = c
                .simple_query(text)
                .await
                .unwrap_or_else(|e| panic!("{user} {text:?}: {e}"));
            assert!(
                got.iter().all(|m| !matches!(m, SimpleQueryMessage::Row(_))),
                "{user} {text:?}"
            );
            // The extended protocol: Parse of an empty text, then Bind and Execute.
            let rows = c
                .query(text, &[])
                .await
                .unwrap_or_else(|e| panic!("{user} extended {text:?}: {e}"));
            assert!(rows.is_empty(), "{user} extended {text:?}");
        }
        let one: Vec<_> = c.simple_query("SELECT 1").await.expect("session goes on");
        assert!(one.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))));
    }
}
