//! Per-statement decisions: which statements a restricted role may run and how each is
//! rewritten before it is forwarded.

use sqlparser::ast::{LockTableMode, ObjectName, Statement};
use sqlparser::parser::Parser;

use super::recording::walk_reads;
pub(super) use super::recording::{name_parts, record_writes};
use super::writes::modifies_data;
use super::{dialect, fold, lexer, quote, Analysed, Ctx, Outcome, PathEvent};
use crate::analysis::{Reason, Refusal, Why};
use crate::policy::model::{Capability, StatementClass};

/// Analyse `sql` for a restricted role.
pub fn analyse(sql: &str, ctx: &Ctx) -> Outcome {
    let result = match analyse_inner(sql, ctx) {
        Err(e) if matches!(*e.reason, Reason::Unparsable { .. }) => {
            // sqlparser cannot read some of PostgreSQL's syntax (a top-level `TABLE t`,
            // `FROM t *`): PostgreSQL's own deparser writes the statement in a plain form,
            // which is analysed like any text and checked by PostgreSQL's parser before it is
            // forwarded. The client's text stays the one audit records describe.
            match super::plain::plain_form(sql) {
                Some(plain) => analyse_inner(&plain, ctx)
                    .map(|mut a| {
                        a.original = sql.to_owned();
                        a
                    })
                    .map_err(|_| e),
                None => Err(e),
            }
        }
        r => r,
    };
    match result {
        Ok(a) => Outcome::Forward(std::sync::Arc::new(a)),
        Err(e) => Outcome::Refuse(super::inheritance::unmarked(e)),
    }
}

fn analyse_inner(sql: &str, ctx: &Ctx) -> Result<Analysed, Refusal> {
    if let Some(why) = lexer::unfaithful(sql) {
        return Err(ctx.unsupported(why));
    }
    if let Some(fetch) = super::cursor_moves::move_as_fetch(sql) {
        return super::cursor_moves::analyse_move(&fetch, ctx);
    }
    let marked = super::inheritance::mark_only(sql);
    let mut stmts = Parser::parse_sql(&dialect(), &marked)
        .or_else(|e| match super::cursor_moves::with_from(&marked) {
            Some(t) => Parser::parse_sql(&dialect(), &t).map_err(|_| e),
            None => Err(e),
        })
        .map_err(|e| {
            // What cannot be parsed cannot be analysed: a policy refusal, whatever PostgreSQL
            // would make of the text.
            ctx.refusal(Reason::Unparsable {
                do_block: lexer::first_word(sql).as_deref() == Some("do"),
                parser: e.to_string(),
            })
        })?;
    let mut out = Analysed {
        original: sql.to_owned(),
        command: lexer::first_word(sql)
            .unwrap_or_default()
            .to_ascii_uppercase(),
        ..Default::default()
    };
    // Only a single statement's result can be told apart for stripping hidden columns.
    out.single = stmts.len() == 1;
    out.hide_subjects = ctx.hidden_subjects && out.single;
    let mut only_writes = Vec::new();
    for (i, stmt) in stmts.iter_mut().enumerate() {
        out.parameters_once = super::pushdown_constants::used_once(&*stmt);
        if let Statement::Prepare { data_types, .. } = &*stmt {
            // A declared type chooses the comparison a repeated parameter makes (see
            // `pushdown_parameters::SAFE_DECLARED_TYPES`): others are not repeated.
            out.parameters_once.retain(|n| {
                n.checked_sub(1)
                    .and_then(|i| data_types.get(i))
                    .is_none_or(|t| super::pushdown_parameters::safe_declared_name(&t.to_string()))
            });
        }
        let class = statement(stmt, ctx, &mut out)?;
        if let Some(target) = out.only_write.take() {
            only_writes.push((i, target));
        }
        // Transaction control, settings and the like are part of any session's work; the
        // classes a policy limits are read, write, DDL and COPY.
        if class != StatementClass::Utility && !ctx.rules.allows_class(class) {
            return Err(ctx.not_allowed(format!("{class:?} statements"), Why::Plain));
        }
        out.classes.push(class);
    }
    let mut rendered: Vec<String> = stmts.iter().map(|s| s.to_string()).collect();
    for (i, (keyword, table)) in only_writes {
        let r = &mut rendered[i];
        let target = format!("{keyword} {table}");
        if r.matches(&target).count() != 1 {
            return Err(ctx.unsupported(&format!("{keyword} ONLY {table} in this statement")));
        }
        *r = r.replacen(&target, &format!("{keyword} ONLY {table}"), 1);
    }
    let sql_out = rendered.join(";\n");
    if super::inheritance::leaks_marker(&sql_out) {
        return Err(ctx.unsupported("ONLY in this position"));
    }
    // PostgreSQL must read what is forwarded as the analysis did. This replaces reading the
    // rendering back with sqlparser, which compared sqlparser with itself.
    out.verify_with_postgres(&sql_out, ctx)?;
    out.sql = out
        .put_stand_ins(sql_out)
        .map_err(|e| ctx.unsupported(&format!("the rewritten statement ({e})")))?;
    Ok(out)
}

fn statement(
    stmt: &mut Statement,
    ctx: &Ctx,
    out: &mut Analysed,
) -> Result<StatementClass, Refusal> {
    match stmt {
        Statement::Query(q) => {
            if let Some(tracked) = super::settings::tracked_search_path(q, ctx) {
                let (path, local) = tracked?;
                out.search_path_local = local;
                out.path_events
                    .push(super::PathEvent::Set(path.clone(), local));
                out.search_path = Some(path);
                out.hide_subjects = false;
                return Ok(StatementClass::Utility);
            }
            super::settings::pin_set_config_name(q);
            if modifies_data(q) {
                return refuse_kind(ctx, "a data-modifying statement inside WITH");
            }
            read_query(q, ctx, out, true)?;
            Ok(StatementClass::Read)
        }
        Statement::Insert(ins) => super::write_statements::insert(ins, ctx, out),
        Statement::Update(u) => super::write_statements::update(u, ctx, out),
        Statement::Delete(d) => super::write_statements::delete(d, ctx, out),
        Statement::Copy {
            source, to, target, ..
        } => super::write_statements::copy((source, *to, target), ctx, out),
        Statement::Explain {
            verbose,
            statement: inner,
            ..
        } => {
            out.hide_subjects = false;
            if *verbose {
                return refuse_kind(
                    ctx,
                    "EXPLAIN VERBOSE (it prints the expressions that mask values)",
                );
            }
            // A plan is the result, not the statement's columns.
            out.single = false;
            statement(inner, ctx, out)
        }
        // A prepared statement has the class of what it prepares, so EXECUTE cannot run what
        // the role's classes would refuse.
        // The session follows prepared statements by name, so EXECUTE's results carry the
        // hidden subject keys of what was prepared, as a cursor's FETCH results carry its
        // query's.
        Statement::Prepare {
            statement: inner, ..
        } => statement(inner, ctx, out),
        Statement::Declare { stmts } => {
            let single = stmts.len() == 1;
            for d in stmts.iter_mut() {
                if let Some(q) = d.for_query.as_mut() {
                    read_query(q, ctx, out, single)?;
                }
            }
            Ok(StatementClass::Read)
        }
        other => utility(other, ctx, out),
    }
}

/// `{what} is not allowed for role R`, as an analysis result.
pub(super) fn refuse_kind<T>(ctx: &Ctx, what: &str) -> Result<T, Refusal> {
    Err(ctx.not_allowed(what, Why::Plain))
}

/// A query whose rows the client gets: with hidden subject keys and result origins when it is
/// the text's only result (`single`), its reads recorded and rewritten.
fn read_query(
    q: &mut sqlparser::ast::Query,
    ctx: &Ctx,
    out: &mut Analysed,
    single: bool,
) -> Result<(), Refusal> {
    if out.hide_subjects && single {
        out.hidden_keys = super::subjects::add_hidden_keys(q, ctx);
        out.hidden = out.hidden_keys.len();
    }
    if out.single && single {
        out.origins = super::result_origins::of_query(q, ctx);
    }
    walk_reads(q, ctx, out)?;
    if out.hidden > 0 && !out.touches_personal_data() {
        // Nothing personal is read, so there is no record to name subjects in.
        super::subjects::remove_hidden_keys(q, out.hidden);
        out.hidden = 0;
        out.hidden_keys.clear();
    }
    Ok(())
}

/// Transaction control, savepoints, settings, cursors and locks: statements that read no
/// rows themselves, followed for what they do to search_path.
fn utility(stmt: &mut Statement, ctx: &Ctx, out: &mut Analysed) -> Result<StatementClass, Refusal> {
    if let Some(events) = transaction_events(stmt) {
        out.path_events.extend(events);
        return Ok(StatementClass::Utility);
    }
    match stmt {
        Statement::Execute { .. }
        | Statement::Deallocate { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::ShowVariable { .. }
        | Statement::UNLISTEN { .. } => {
            walk_reads(stmt, ctx, out)?;
            Ok(StatementClass::Utility)
        }
        // Notifications carry data between sessions past the analysis of results; UNLISTEN
        // (above) moves none, and pools send `UNLISTEN *` when a connection is returned.
        Statement::LISTEN { .. } | Statement::NOTIFY { .. } => {
            if !ctx.rules.allows(Capability::Notify) {
                return refuse_kind(ctx, "LISTEN/NOTIFY without the notify capability");
            }
            walk_reads(stmt, ctx, out)?;
            Ok(StatementClass::Utility)
        }
        Statement::Discard { .. } => {
            out.search_path = Some(default_search_path());
            out.path_events
                .push(super::PathEvent::Set(default_search_path(), false));
            Ok(StatementClass::Utility)
        }
        Statement::Reset(r) => {
            let text = r.to_string().to_ascii_lowercase();
            if text.contains("role") || text.contains("session") {
                return refuse_kind(ctx, "RESET ROLE / SESSION AUTHORIZATION");
            }
            if text.contains(" all") || text.contains("search_path") {
                out.search_path = Some(default_search_path());
                out.path_events
                    .push(super::PathEvent::Set(default_search_path(), false));
            }
            Ok(StatementClass::Utility)
        }
        // pg_dump locks the tables it dumps against concurrent DDL; ACCESS SHARE conflicts only
        // with ACCESS EXCLUSIVE and reads nothing.
        Statement::Lock(lock) => {
            if lock.lock_mode != Some(LockTableMode::AccessShare) {
                return refuse_kind(ctx, "LOCK TABLE in a mode other than ACCESS SHARE");
            }
            for t in lock.tables.iter_mut() {
                let rel = ctx.resolve(&name_parts(ctx, &t.name)?, &t.name)?;
                t.name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
            }
            Ok(StatementClass::Utility)
        }
        Statement::Set(set) => {
            super::settings::set_statement(set, ctx, out)?;
            Ok(StatementClass::Utility)
        }
        other => {
            let kind = other.to_string();
            let kind: String = kind
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            refuse_kind(ctx, &format!("the statement {kind} ..."))
        }
    }
}

/// What a transaction-control or savepoint statement does to the history search_path is
/// restored from, or None for other statements.
fn transaction_events(stmt: &Statement) -> Option<Vec<PathEvent>> {
    let chained = |end: PathEvent, chain: bool| {
        let mut events = vec![end];
        if chain {
            events.push(PathEvent::Begin);
        }
        events
    };
    Some(match stmt {
        Statement::Savepoint { name } => vec![PathEvent::Savepoint(fold(name))],
        Statement::ReleaseSavepoint { name } => vec![PathEvent::Release(fold(name))],
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => vec![PathEvent::RollbackTo(fold(name))],
        // A block that begins and ends within one text is followed here, in order: the
        // session learns of transaction ends only from the ReadyForQuery after the text.
        Statement::StartTransaction { .. } => vec![PathEvent::Begin],
        Statement::Commit { chain, .. } => chained(PathEvent::Commit, *chain),
        Statement::Rollback { chain, .. } => chained(PathEvent::Rollback, *chain),
        _ => return None,
    })
}

pub fn default_search_path() -> Vec<String> {
    vec!["$user".into(), "public".into()]
}
