//! RFC 2136 dynamic update with TSIG, to any authoritative server (BIND9,
//! Knot, …). hickory-proto builds and signs the wire format. All rrsets go
//! in one UPDATE message, which the server applies atomically. Reads ask
//! the update server directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{DnsConfig, ProviderConfig};
use super::provider::DnsProvider;
use super::{DnsError, RecordSet};

pub struct Rfc2136 {
    server: String,
    zone: String,
    signer: TSigner,
    key_name: String,
    timeout: Duration,
}

/// A record value that is not valid data for its type.
#[derive(Debug, thiserror::Error)]
enum RdataError {
    #[error(transparent)]
    Address(#[from] std::net::AddrParseError),
    #[error(transparent)]
    Name(#[from] hickory_proto::ProtoError),
}

fn err(server: &str, reason: impl Into<String>) -> DnsError {
    DnsError::Api {
        provider: "rfc2136",
        url: server.to_string(),
        reason: reason.into(),
    }
}

impl Rfc2136 {
    pub fn new(cfg: &DnsConfig, timeout: Duration) -> Result<Self, DnsError> {
        let ProviderConfig::Rfc2136 {
            server,
            key_name,
            algorithm,
            secret,
        } = &cfg.provider
        else {
            return Err(err("", "not an RFC 2136 config"));
        };
        let secret = secret.resolve()?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.expose().trim())
            .map_err(|_| {
                err(
                    server,
                    "tsig_secret is not base64 (as in a BIND/Knot key file)",
                )
            })?;
        let alg = match algorithm.as_str() {
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            _ => TsigAlgorithm::HmacSha256,
        };
        let name =
            Name::from_ascii(key_name).map_err(|e| err(server, format!("tsig_key_name: {e}")))?;
        let signer =
            TSigner::new(key, alg, name, 300).map_err(|e| err(server, format!("TSIG: {e}")))?;
        Ok(Rfc2136 {
            server: server.clone(),
            zone: cfg.zone.clone(),
            signer,
            key_name: key_name.clone(),
            timeout,
        })
    }

    fn rtype(t: &str) -> RecordType {
        match t {
            "AAAA" => RecordType::AAAA,
            "CNAME" => RecordType::CNAME,
            _ => RecordType::A,
        }
    }

    fn rdata(t: &str, v: &str) -> Result<RData, RdataError> {
        Ok(match t {
            "A" => RData::A(v.parse::<std::net::Ipv4Addr>()?.into()),
            "AAAA" => RData::AAAA(v.parse::<std::net::Ipv6Addr>()?.into()),
            _ => RData::CNAME(hickory_proto::rr::rdata::CNAME(Name::from_ascii(v)?)),
        })
    }

    /// Sends over TCP (updates can be large, and TCP avoids truncation).
    async fn exchange(&self, msg: &Message) -> Result<Message, DnsError> {
        let addr: SocketAddr = self
            .server
            .parse()
            .map_err(|_| err(&self.server, "server is not IP:PORT"))?;
        let bytes = msg.to_vec().map_err(|e| err(&self.server, e.to_string()))?;
        let fut = async {
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| err(&self.server, e.to_string()))?;
            s.write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .map_err(|e| err(&self.server, e.to_string()))?;
            s.write_all(&bytes)
                .await
                .map_err(|e| err(&self.server, e.to_string()))?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len)
                .await
                .map_err(|e| err(&self.server, e.to_string()))?;
            let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut b)
                .await
                .map_err(|e| err(&self.server, e.to_string()))?;
            Message::from_vec(&b).map_err(|e| err(&self.server, e.to_string()))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| err(&self.server, "no answer in time"))?
    }
}

#[async_trait]
impl DnsProvider for Rfc2136 {
    async fn current(&self, want: &[RecordSet]) -> Result<Vec<Option<RecordSet>>, DnsError> {
        let mut out = Vec::new();
        for w in want {
            let v = crate::dnsquery::answers(&self.server, &w.name, &w.rtype, self.timeout).await?;
            out.push((!v.is_empty()).then(|| RecordSet {
                name: w.name.clone(),
                rtype: w.rtype.clone(),
                ttl: w.ttl,
                values: v,
            }));
        }
        Ok(out)
    }

    async fn replace(
        &self,
        sets: &[RecordSet],
        _current: &[Option<RecordSet>],
    ) -> Result<Option<String>, DnsError> {
        let zone = Name::from_ascii(&self.zone).map_err(|e| err(&self.server, e.to_string()))?;
        let mut q = Query::new();
        q.set_name(zone)
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        let mut msg = Message::new();
        msg.set_id(fastrand::u16(..))
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        msg.add_zone(q);
        for s in sets {
            let name = Name::from_ascii(&s.name).map_err(|e| err(&self.server, e.to_string()))?;
            // Delete the rrset, then add the new records: one atomic update.
            let mut del = Record::update0(name.clone(), 0, Self::rtype(&s.rtype));
            del.set_dns_class(DNSClass::ANY);
            msg.add_update(del.into_record_of_rdata());
            for v in &s.values {
                let data = Self::rdata(&s.rtype, v)
                    .map_err(|e| err(&self.server, format!("{} {}: {e}", s.name, s.rtype)))?;
                msg.add_update(Record::from_rdata(name.clone(), s.ttl, data));
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        msg.finalize(&self.signer, now)
            .map_err(|e| err(&self.server, format!("TSIG signing: {e}")))?;
        let reply = self.exchange(&msg).await?;
        let code = reply.response_code();
        if code != ResponseCode::NoError {
            let tsig_err = if reply.signature().is_empty() {
                ""
            } else {
                " (see the TSIG error in the server log)"
            };
            let hint = match code {
                ResponseCode::NotAuth => format!("NOTAUTH: the server did not accept TSIG key `{}` (BADSIG/BADKEY: wrong secret, name or algorithm){tsig_err}", self.key_name),
                ResponseCode::Refused => "REFUSED: the key is not allowed to update this zone (allow-update / ACL)".to_string(),
                ResponseCode::NotZone => "NOTZONE: a record is outside the zone".to_string(),
                other => format!("{other}"),
            };
            return Err(DnsError::Rejected {
                provider: "rfc2136",
                url: self.server.clone(),
                status: u16::from(code),
                body: hint,
            });
        }
        Ok(None)
    }

    async fn wait(&self, _change: &str, _deadline: Instant) -> Result<(), DnsError> {
        Ok(())
    }
}
