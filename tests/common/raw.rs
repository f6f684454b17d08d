//! A hand-written protocol client for sending what real drivers never send.
#![allow(dead_code)]

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub struct Raw {
    pub stream: TlsStream<TcpStream>,
}

/// A message from the server: tag and body.
#[derive(Debug)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// Field `code` of an ErrorResponse/NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        let mut i = 0;
        while i < self.body.len() && self.body[i] != 0 {
            let c = self.body[i];
            let end = self.body[i + 1..].iter().position(|&b| b == 0)? + i + 1;
            if c == code {
                return Some(String::from_utf8_lossy(&self.body[i + 1..end]).into_owned());
            }
            i = end + 1;
        }
        None
    }
}

impl Raw {
    /// TLS through SSLRequest, then a startup for `user` (who must be trusted by pg_hba).
    pub async fn connect(port: u16, tls: Arc<rustls::ClientConfig>, user: &str) -> Raw {
        Self::connect_db(port, tls, user, "postgres").await
    }

    /// Like `connect`, to database `db`.
    pub async fn connect_db(
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        user: &str,
        db: &str,
    ) -> Raw {
        Self::connect_keyed(port, tls, user, db).await.0
    }

    /// Like `connect_db`, also returning the BackendKeyData: process id and secret key.
    pub async fn connect_keyed(
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        user: &str,
        db: &str,
    ) -> (Raw, i32, Vec<u8>) {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .expect("ssl request");
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.expect("ssl answer");
        assert_eq!(b[0], b'S');
        let connector = tokio_rustls::TlsConnector::from(tls);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let stream = connector.connect(name, tcp).await.expect("tls");
        let mut raw = Raw { stream };
        let mut body = vec![0, 3, 0, 0];
        for (k, v) in [("user", user), ("database", db)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.stream.write_all(&packet).await.expect("startup");
        let mut key = (0, Vec::new());
        loop {
            let m = raw.recv().await.expect("login message");
            assert_ne!(m.tag, b'E', "login failed: {:?}", m.field(b'M'));
            if m.tag == b'K' && m.body.len() >= 8 {
                let pid = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                key = (pid, m.body[4..].to_vec());
            }
            if m.tag == b'Z' {
                return (raw, key.0, key.1);
            }
        }
    }

    /// Start a session with exactly these startup parameters; returns the SQLSTATE of the
    /// error that ends the login, or None when it succeeds.
    pub async fn try_connect_with(
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        params: &[(&str, &str)],
    ) -> Option<String> {
        let mut raw = Self::start_with(port, tls, params).await;
        loop {
            let m = raw.recv().await?;
            if m.tag == b'E' {
                return m.field(b'C');
            }
            if m.tag == b'Z' {
                return None;
            }
        }
    }

    /// The first answer to a startup with exactly these parameters: the SQLSTATE of an
    /// ErrorResponse, "auth" when a password is asked for, or the message's tag.
    pub async fn first_answer(
        port: u16,
        tls: Arc<rustls::ClientConfig>,
        params: &[(&str, &str)],
    ) -> String {
        let mut raw = Self::start_with(port, tls, params).await;
        match raw.recv().await {
            Some(m) if m.tag == b'E' => m.field(b'C').unwrap_or_default(),
            Some(m) if m.tag == b'R' => "auth".into(),
            Some(m) => (m.tag as char).to_string(),
            None => "closed".into(),
        }
    }

    /// TLS through SSLRequest, then a startup with exactly these parameters.
    async fn start_with(port: u16, tls: Arc<rustls::ClientConfig>, params: &[(&str, &str)]) -> Raw {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .expect("ssl request");
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.expect("ssl answer");
        let connector = tokio_rustls::TlsConnector::from(tls);
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let stream = connector.connect(name, tcp).await.expect("tls");
        let mut raw = Raw { stream };
        let mut body = vec![0, 3, 0, 0];
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.stream.write_all(&packet).await.expect("startup");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Next message, or None at end of stream.
    pub async fn recv(&mut self) -> Option<Msg> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.checked_sub(4)?];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Msg { tag: head[0], body })
    }

    /// Messages up to and including ReadyForQuery (or the end of the stream).
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }
}

/// A tagged message with a body.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    msg(b'Q', &b)
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

/// Parse `sql` as statement `name` (no parameter types).
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}

/// Bind statement `stmt` to the unnamed portal, no parameters, all results in `format`
/// (0 text, 1 binary).
pub fn bind(stmt: &str, format: i16) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, stmt);
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&format.to_be_bytes());
    msg(b'B', &b)
}

/// Describe a statement (`S`) or portal (`P`).
pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name);
    msg(b'D', &b)
}

/// Execute the unnamed portal to completion.
pub fn execute() -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

/// Close a statement (`S`) or portal (`P`).
pub fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name);
    msg(b'C', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}
