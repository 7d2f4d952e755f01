//! Asking an authoritative server directly (UDP, TCP on truncation), with
//! hickory-proto doing the wire format. Verification must not go through a
//! caching resolver: a cache would answer the old values for a TTL.
//!
//! A foundation module: `dns.switch`/`dns.check` verify with it and
//! `http.check` resolves through it (`resolve_via`), so it must not live
//! inside the `dns` kinds.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A query that got no usable answer; `reason` is the transport or
/// protocol failure as the operator needs to read it.
#[derive(Debug, Error)]
#[error("DNS query to {server} for {name} {rtype}: {reason}")]
pub struct QueryError {
    pub server: String,
    pub name: String,
    pub rtype: String,
    pub reason: String,
}

fn rtype(t: &str) -> RecordType {
    match t {
        "AAAA" => RecordType::AAAA,
        "CNAME" => RecordType::CNAME,
        _ => RecordType::A,
    }
}

/// The values a server answers for `name`/`rtype`, normalised.
pub async fn answers(
    server: &str,
    name: &str,
    rt: &str,
    limit: Duration,
) -> Result<Vec<String>, QueryError> {
    let err = |reason: String| QueryError {
        server: server.to_string(),
        name: name.to_string(),
        rtype: rt.to_string(),
        reason,
    };
    let addr: SocketAddr = server.parse().map_err(|_| err("not IP:PORT".into()))?;
    let qname = Name::from_ascii(name).map_err(|e| err(e.to_string()))?;
    let mut msg = Message::new();
    msg.set_id(fastrand::u16(..))
        .set_recursion_desired(false)
        .add_query(Query::query(qname, rtype(rt)));
    let bytes = msg.to_vec().map_err(|e| err(e.to_string()))?;
    let fut = async {
        let sock = tokio::net::UdpSocket::bind(if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })
        .await
        .map_err(|e| err(e.to_string()))?;
        sock.send_to(&bytes, addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut buf = vec![0u8; 4096];
        let reply = loop {
            let (n, from) = sock
                .recv_from(&mut buf)
                .await
                .map_err(|e| err(e.to_string()))?;
            if from != addr {
                continue;
            }
            let m = Message::from_vec(&buf[..n]).map_err(|e| err(e.to_string()))?;
            if m.id() == msg.id() {
                break m;
            }
        };
        if !reply.truncated() {
            return Ok(reply);
        }
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        s.write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .map_err(|e| err(e.to_string()))?;
        s.write_all(&bytes).await.map_err(|e| err(e.to_string()))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut b).await.map_err(|e| err(e.to_string()))?;
        Message::from_vec(&b).map_err(|e| err(e.to_string()))
    };
    let reply = tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| err(format!("no answer within {limit:?}")))??;
    let code = reply.response_code();
    if code != hickory_proto::op::ResponseCode::NoError
        && code != hickory_proto::op::ResponseCode::NXDomain
    {
        return Err(err(format!("server answered {code}")));
    }
    let want = rtype(rt);
    let vals: Vec<String> = reply
        .answers()
        .iter()
        .filter(|r| r.record_type() == want)
        .map(|r| r.data().to_string())
        .collect();
    Ok(normalize(&vals))
}

/// Values as compared everywhere: trimmed, lowercase, sorted, deduplicated,
/// so sets compare regardless of the order or case a server returns.
pub fn normalize(values: &[String]) -> Vec<String> {
    let mut v: Vec<String> = values
        .iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    v.sort();
    v.dedup();
    v
}
