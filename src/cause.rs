//! Error texts with their causes, for people: the libraries' own Display of an error often
//! stops at its kind ("db error", "error connecting to server") and leaves the cause (the
//! server's message, the IO or TLS error) in the source chain.

/// An error with every cause below it: tokio-postgres's own Display says only "db error" or
/// "error connecting to server"; the server's message (with its SQLSTATE), the IO error or the
/// TLS alert is in the chain.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(db) = e
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
    {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}
