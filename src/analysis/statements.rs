//! Per-statement decisions: which statements a restricted role may run and how each is
//! rewritten before it is forwarded.

use sqlparser::ast::{
    AssignmentTarget, CopySource, CopyTarget, FromTable, LockTableMode, ObjectName,
    OnConflictAction, OnInsert, Statement, TableFactor, TableObject, VisitMut,
};
use sqlparser::parser::Parser;

pub(super) use super::recording::{name_parts, record_writes};
use super::recording::{record_returned, return_subjects, walk_parts, walk_reads, walk_target};
use super::write_targets::{
    assignment_targets, column_name, guard_new_rows, judged, only_target, record_view_writes,
    routed_rows, through_view, writable,
};
use super::writes::{modifies_data, Target};
use super::{dialect, fold, lexer, parse_query, quote, Analysed, Ctx, Outcome};
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
    let mut stmts = Parser::parse_sql(&dialect(), &marked).map_err(|e| {
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
    let refuse_kind = |what: &str| Err(ctx.not_allowed(what, Why::Plain));
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
                return refuse_kind("a data-modifying statement inside WITH");
            }
            if out.hide_subjects {
                out.hidden_keys = super::subjects::add_hidden_keys(q, ctx);
                out.hidden = out.hidden_keys.len();
            }
            if out.single {
                out.origins = super::result_origins::of_query(q, ctx);
            }
            walk_reads(q.as_mut(), ctx, out)?;
            if out.hidden > 0 && !out.touches_personal_data() {
                // Nothing personal is read, so there is no record to name subjects in.
                super::subjects::remove_hidden_keys(q, out.hidden);
                out.hidden = 0;
                out.hidden_keys.clear();
            }
            Ok(StatementClass::Read)
        }
        Statement::Insert(ins) => {
            let TableObject::TableName(name) = &mut ins.table else {
                return refuse_kind("INSERT into a table function");
            };
            let rel = writable(ctx, ctx.resolve(&name_parts(ctx, name)?, name)?)?;
            routed_rows(ctx, &rel)?;
            let view = through_view(ctx, &rel)?;
            *name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
            let alias = ins.table_alias.as_ref().map(|a| fold(&a.alias));
            let mut target = judged(ctx, &rel, alias, view.as_ref());
            if ins.columns.is_empty() {
                target.check_all_writable()?;
                record_view_writes(
                    ctx,
                    &rel,
                    view.as_ref(),
                    rel.columns.iter().map(|c| c.name.clone()),
                    out,
                );
            }
            let columns = ins
                .columns
                .iter()
                .map(|c| column_name(ctx, c))
                .collect::<Result<Vec<_>, _>>()?;
            guard_new_rows(ctx, &columns, ins.source.as_deref_mut(), &mut target)?;
            // Row rules are the written table's: through a view, its base table's columns.
            let written = view
                .as_ref()
                .map_or_else(|| rel.clone(), |v| v.base.clone());
            let row_columns = match (&view, columns.is_empty()) {
                (Some(v), true) => v.map.iter().map(|(c, _)| c.clone()).collect(),
                _ => columns.clone(),
            };
            let row_columns = super::row_writes::base_columns(view.as_ref(), &row_columns);
            super::row_writes::check_insert(
                ctx,
                &written,
                &row_columns,
                ins.source.is_some(),
                ins.on.is_some(),
            )?;
            record_view_writes(ctx, &rel, view.as_ref(), columns.clone(), out);
            if let Some(OnInsert::OnConflict(oc)) = &ins.on {
                if let OnConflictAction::DoUpdate(du) = &oc.action {
                    for a in &du.assignments {
                        assignment_targets(ctx, &a.target, &target)?;
                        let cols = match &a.target {
                            AssignmentTarget::ColumnName(n) => vec![column_name(ctx, n)?],
                            AssignmentTarget::Tuple(ns) => ns
                                .iter()
                                .map(|n| column_name(ctx, n))
                                .collect::<Result<_, _>>()?,
                        };
                        let cols = super::row_writes::base_columns(view.as_ref(), &cols);
                        super::row_writes::check_written_columns(ctx, &written, &cols, "update")?;
                    }
                }
            }
            if let Some(r) = &ins.returning {
                target.check_returning(r)?;
                record_returned(ctx, &rel, target.returned(r), out);
            }
            // The rows inserted come from a query that cannot see the table written: its
            // names are read like any query's.
            let source = ins.source.take();
            let walked = walk_target(ins, &mut target);
            ins.source = source;
            walked?;
            out.take_mask_stand_ins(&mut target.stand_ins);
            out.take_mask_stand_ins(&mut target.guards);
            out.guard_places.append(&mut target.guard_places);
            walk_reads(ins, ctx, out)?;
            super::row_writes::guard_new_rows(
                ctx,
                &written,
                &row_columns,
                ins.source.as_deref_mut(),
                out,
            )?;
            let reference = match &ins.table_alias {
                Some(a) => a.alias.clone(),
                None => quote(&rel.name),
            };
            return_subjects(&mut ins.returning, ctx, &rel, reference, out);
            Ok(StatementClass::Write)
        }
        Statement::Update(u) => {
            let TableFactor::Table { name, alias, .. } = &mut u.table.relation else {
                return refuse_kind("UPDATE of a derived table");
            };
            let rel = writable(ctx, ctx.resolve(&name_parts(ctx, name)?, name)?)?;
            only_target(ctx, &rel, name, "UPDATE", out)?;
            let view = through_view(ctx, &rel)?;
            *name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
            let reference = alias
                .as_ref()
                .map_or_else(|| quote(&rel.name), |a| a.name.clone());
            let alias = alias.as_ref().map(|a| fold(&a.name));
            let mut target = judged(ctx, &rel, alias, view.as_ref());
            let mut subject_values = Vec::new();
            for (i, a) in u.assignments.iter_mut().enumerate() {
                let cols: Vec<String> = match &a.target {
                    AssignmentTarget::ColumnName(n) => {
                        let c = column_name(ctx, n)?;
                        target.guard_update(&c, &mut a.value)?;
                        vec![c]
                    }
                    AssignmentTarget::Tuple(ns) => {
                        assignment_targets(ctx, &a.target, &target)?;
                        ns.iter()
                            .map(|n| column_name(ctx, n))
                            .collect::<Result<_, _>>()?
                    }
                };
                let written = view.as_ref().map_or(&*rel, |v| v.base.as_ref());
                let base_cols = super::row_writes::base_columns(view.as_ref(), &cols);
                super::row_writes::check_assignment(
                    ctx,
                    written,
                    i,
                    &base_cols,
                    &mut subject_values,
                )?;
                record_view_writes(ctx, &rel, view.as_ref(), cols, out);
            }
            if let Some(r) = &u.returning {
                target.check_returning(r)?;
                record_returned(ctx, &rel, target.returned(r), out);
            }
            walk_target(u, &mut target)?;
            out.take_mask_stand_ins(&mut target.stand_ins);
            out.take_mask_stand_ins(&mut target.guards);
            out.guard_places.append(&mut target.guard_places);
            walk_parts(ctx, out, |r| {
                u.table.joins.visit(r)?;
                u.assignments.visit(r)?;
                u.from.visit(r)?;
                u.selection.visit(r)?;
                u.returning.visit(r)
            })?;
            super::row_writes::guard_update(
                ctx,
                (&rel, view.as_ref()),
                (&fold(&reference), &subject_values),
                (&mut u.assignments, &mut u.selection),
                out,
            )?;
            return_subjects(&mut u.returning, ctx, &rel, reference, out);
            Ok(StatementClass::Write)
        }
        Statement::Delete(d) => {
            let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &mut d.from;
            if from.len() != 1 || !d.tables.is_empty() {
                return refuse_kind("DELETE from several tables");
            }
            let TableFactor::Table { name, alias, .. } = &mut from[0].relation else {
                return refuse_kind("DELETE from a derived table");
            };
            let rel = writable(ctx, ctx.resolve(&name_parts(ctx, name)?, name)?)?;
            only_target(ctx, &rel, name, "DELETE FROM", out)?;
            let view = through_view(ctx, &rel)?;
            let base = view.as_ref().map_or(&*rel, |v| v.base.as_ref());
            super::row_references::check_referenced(ctx, base, None)?;
            record_writes(ctx, &rel, std::iter::empty(), out);
            *name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
            let reference = alias
                .as_ref()
                .map_or_else(|| quote(&rel.name), |a| a.name.clone());
            let alias = alias.as_ref().map(|a| fold(&a.name));
            let mut target = judged(ctx, &rel, alias, view.as_ref());
            if let Some(r) = &d.returning {
                target.check_returning(r)?;
                record_returned(ctx, &rel, target.returned(r), out);
            }
            walk_target(d, &mut target)?;
            out.take_mask_stand_ins(&mut target.stand_ins);
            walk_parts(ctx, out, |r| {
                d.using.visit(r)?;
                d.selection.visit(r)?;
                d.returning.visit(r)
            })?;
            super::row_rules::guard_written_rows(
                ctx,
                &rel,
                view.as_ref(),
                &fold(&reference),
                &mut d.selection,
                out,
            )?;
            return_subjects(&mut d.returning, ctx, &rel, reference, out);
            Ok(StatementClass::Write)
        }
        Statement::Copy {
            source, to, target, ..
        } => {
            if !matches!(target, CopyTarget::Stdin | CopyTarget::Stdout)
                && !ctx.rules.allows(Capability::ServerFiles)
            {
                return refuse_kind("COPY to or from a server file or program");
            }
            if *to {
                if let CopySource::Table {
                    table_name,
                    columns,
                } = source
                {
                    let cols = if columns.is_empty() {
                        "*".to_owned()
                    } else {
                        columns
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    // `COPY t TO` copies t's own rows, never its inheritance children's:
                    // the query reads `ONLY t`, or a dump would hold the children's rows twice.
                    let q = parse_query(&format!(
                        "SELECT {cols} FROM {}",
                        super::inheritance::only(table_name)
                    ))
                    .map_err(|e| ctx.unsupported(&format!("COPY {table_name}: {e}")))?;
                    *source = CopySource::Query(q);
                }
                if let CopySource::Query(q) = source {
                    walk_reads(q.as_mut(), ctx, out)?;
                }
            } else {
                let CopySource::Table {
                    table_name,
                    columns,
                } = source
                else {
                    return refuse_kind("COPY FROM into a query");
                };
                let rel = writable(ctx, ctx.resolve(&name_parts(ctx, table_name)?, table_name)?)?;
                routed_rows(ctx, &rel)?;
                super::row_writes::check_written_columns(ctx, &rel, &[], "COPY FROM")?;
                *table_name = ObjectName::from(vec![quote(&rel.schema), quote(&rel.name)]);
                let target = Target::new(ctx, &rel, None);
                if columns.is_empty() {
                    target.check_all_writable()?;
                    record_writes(ctx, &rel, rel.columns.iter().map(|c| c.name.clone()), out);
                }
                for c in columns.iter() {
                    target.check_write(&fold(c))?;
                    record_writes(ctx, &rel, [fold(c)], out);
                }
            }
            Ok(StatementClass::Copy)
        }
        Statement::Explain {
            verbose,
            statement: inner,
            ..
        } => {
            out.hide_subjects = false;
            if *verbose {
                return refuse_kind("EXPLAIN VERBOSE (it prints the expressions that mask values)");
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
                    if out.hide_subjects && single {
                        out.hidden_keys = super::subjects::add_hidden_keys(q, ctx);
                        out.hidden = out.hidden_keys.len();
                    }
                    if out.single && single {
                        out.origins = super::result_origins::of_query(q, ctx);
                    }
                    walk_reads(q.as_mut(), ctx, out)?;
                    if out.hidden > 0 && !out.touches_personal_data() {
                        super::subjects::remove_hidden_keys(q, out.hidden);
                        out.hidden = 0;
                        out.hidden_keys.clear();
                    }
                }
            }
            Ok(StatementClass::Read)
        }
        Statement::Savepoint { name } => {
            out.path_events
                .push(super::PathEvent::Savepoint(fold(name)));
            Ok(StatementClass::Utility)
        }
        Statement::ReleaseSavepoint { name } => {
            out.path_events.push(super::PathEvent::Release(fold(name)));
            Ok(StatementClass::Utility)
        }
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => {
            out.path_events
                .push(super::PathEvent::RollbackTo(fold(name)));
            Ok(StatementClass::Utility)
        }
        // A block that begins and ends within one text is followed here, in order: the
        // session learns of transaction ends only from the ReadyForQuery after the text.
        Statement::StartTransaction { .. } => {
            out.path_events.push(super::PathEvent::Begin);
            Ok(StatementClass::Utility)
        }
        Statement::Commit { chain, .. } => {
            out.path_events.push(super::PathEvent::Commit);
            if *chain {
                out.path_events.push(super::PathEvent::Begin);
            }
            Ok(StatementClass::Utility)
        }
        Statement::Rollback { chain, .. } => {
            out.path_events.push(super::PathEvent::Rollback);
            if *chain {
                out.path_events.push(super::PathEvent::Begin);
            }
            Ok(StatementClass::Utility)
        }
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
                return refuse_kind("LISTEN/NOTIFY without the notify capability");
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
                return refuse_kind("RESET ROLE / SESSION AUTHORIZATION");
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
                return refuse_kind("LOCK TABLE in a mode other than ACCESS SHARE");
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
            refuse_kind(&format!("the statement {kind} ..."))
        }
    }
}

pub fn default_search_path() -> Vec<String> {
    vec!["$user".into(), "public".into()]
}
