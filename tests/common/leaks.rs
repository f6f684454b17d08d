//! Leak suites: statements a restricted role tries, run over the simple protocol, the extended
//! protocol (unnamed, text) and as named prepared statements with binary results, with every
//! byte the client receives searched for protected values.
#![allow(dead_code)]

use std::collections::HashSet;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::raw::{self, Raw};
use super::{sqlstate, Env};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Runs, and no protected value appears in what comes back.
    Runs,
    /// Refused (42501 or 42601) with no protected value in the error.
    Refused,
    /// Either outcome is acceptable; only the absence of protected values is checked.
    NoLeak,
}
use Expect::*;

/// Values a restricted role must never receive: bank accounts (with and without dots) and
/// full birth dates (those on 1 January are left out: the year mask yields them).
pub struct Secrets {
    values: HashSet<String>,
}

impl Secrets {
    pub async fn load(direct: &Client) -> Secrets {
        let mut values = HashSet::new();
        for r in direct
            .query(
                "SELECT bank_account, date_of_birth::text FROM contacts",
                &[],
            )
            .await
            .expect("read secrets")
        {
            let a: String = r.get(0);
            values.insert(a.replace('.', ""));
            values.insert(a);
            if let Some(d) = r.get::<_, Option<String>>(1) {
                if !d.ends_with("-01-01") {
                    values.insert(d);
                }
            }
        }
        Secrets { values }
    }

    /// Bank accounts only (with and without dots), for suites whose roles may read birth dates.
    pub async fn bank_accounts(direct: &Client) -> Secrets {
        let mut values = HashSet::new();
        for r in direct
            .query("SELECT bank_account FROM contacts", &[])
            .await
            .expect("read bank accounts")
        {
            let a: String = r.get(0);
            values.insert(a.replace('.', ""));
            values.insert(a);
        }
        Secrets { values }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn leaks(&self, text: &str) -> Option<String> {
        self.values
            .iter()
            .find(|a| text.contains(a.as_str()))
            .cloned()
    }

    /// Whether any bytes hold a protected value (binary results are searched as text too).
    pub fn leaks_bytes(&self, bytes: &[u8]) -> Option<String> {
        self.leaks(&String::from_utf8_lossy(bytes))
    }
}

/// Run one case over the simple protocol; the transaction is rolled back afterwards.
pub async fn run_case(
    c: &Client,
    secrets: &Secrets,
    role: &str,
    sql: &str,
    expect: Expect,
) -> Result<(), String> {
    let result = c.simple_query(sql).await;
    let _ = c.simple_query("ROLLBACK").await;
    match result {
        Ok(msgs) => {
            for m in &msgs {
                if let SimpleQueryMessage::Row(r) = m {
                    for i in 0..r.len() {
                        if let Some(leak) = r.get(i).and_then(|v| secrets.leaks(v)) {
                            return Err(format!("{role}: LEAK of {leak} by {sql:?}"));
                        }
                    }
                }
            }
            if expect == Refused {
                return Err(format!("{role}: expected refusal, but {sql:?} ran"));
            }
            Ok(())
        }
        Err(e) => {
            let text = format!("{e:?}");
            if let Some(leak) = secrets.leaks(&text) {
                return Err(format!("{role}: LEAK of {leak} in error of {sql:?}"));
            }
            if expect == Runs {
                return Err(format!(
                    "{role}: expected {sql:?} to run, got {}",
                    super::message(&e)
                ));
            }
            if expect == Refused && !matches!(sqlstate(&e).as_str(), "42501" | "42601") {
                return Err(format!(
                    "{role}: {sql:?} failed with {} {} instead of a refusal",
                    sqlstate(&e),
                    super::message(&e)
                ));
            }
            Ok(())
        }
    }
}

/// What a client receives for one case over the extended protocol, checked like the simple one.
pub fn check_messages(
    msgs: &[raw::Msg],
    secrets: &Secrets,
    what: &str,
    expect: Expect,
) -> Result<(), String> {
    for m in msgs {
        if let Some(leak) = secrets.leaks_bytes(&m.body) {
            return Err(format!("{what}: LEAK of {leak}"));
        }
    }
    let error = msgs.iter().find(|m| m.tag == b'E');
    match (expect, error) {
        (Refused, None) => Err(format!("{what}: expected refusal, but it ran")),
        (Refused, Some(e)) if !matches!(e.field(b'C').as_deref(), Some("42501" | "42601")) => {
            Err(format!(
                "{what}: failed with {:?} instead of a refusal",
                e.field(b'C')
            ))
        }
        (Runs, Some(e)) => Err(format!("{what}: expected to run, got {:?}", e.field(b'M'))),
        _ => Ok(()),
    }
}

/// Every single-statement case over the extended protocol: unnamed with text results, then
/// named, described and executed with binary results. Returns the failures.
pub async fn run_extended(
    env: &Env,
    secrets: &Secrets,
    role: &str,
    cases: &[(&str, Expect)],
) -> Vec<String> {
    let tls = super::client_tls(&env.certs.ca_cert);
    env.trust_user(role).await;
    let mut c = Raw::connect_db(env.proxy_port(), tls, role, "crm").await;
    let mut failures = Vec::new();
    for (n, (sql, expect)) in cases
        .iter()
        .filter(|(s, _)| !s.starts_with("COPY") && !s.contains(';'))
        .enumerate()
    {
        let mut batch = raw::parse("", sql);
        batch.extend(raw::bind("", 0));
        batch.extend(raw::describe(b'P', ""));
        batch.extend(raw::execute());
        batch.extend(raw::sync());
        c.send(&batch).await.expect("send");
        let mut msgs = c.until_ready().await;
        c.send(&raw::query("ROLLBACK")).await.expect("send");
        let _ = c.until_ready().await;
        if let Err(f) = check_messages(&msgs, secrets, &format!("{role} unnamed {sql:?}"), *expect)
        {
            failures.push(f);
        }
        let name = format!("leak{n}");
        let mut prep = raw::parse(&name, sql);
        prep.extend(raw::describe(b'S', &name));
        prep.extend(raw::sync());
        c.send(&prep).await.expect("send");
        msgs = c.until_ready().await;
        if !msgs.iter().any(|m| m.tag == b'E') {
            let mut run = raw::bind(&name, 1);
            run.extend(raw::execute());
            run.extend(raw::close(b'S', &name));
            run.extend(raw::sync());
            c.send(&run).await.expect("send");
            msgs.extend(c.until_ready().await);
            c.send(&raw::query("ROLLBACK")).await.expect("send");
            let _ = c.until_ready().await;
        }
        if let Err(f) = check_messages(
            &msgs,
            secrets,
            &format!("{role} prepared binary {sql:?}"),
            *expect,
        ) {
            failures.push(f);
        }
    }
    c.send(&raw::query("SELECT 1")).await.expect("send");
    if !c.until_ready().await.iter().any(|m| m.tag == b'D') {
        failures.push(format!("{role}: session unusable after the extended cases"));
    }
    failures
}
