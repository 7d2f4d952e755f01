//! The hash chain: how a record becomes its canonical line ([`encode`]),
//! and how a journal is checked, whole ([`verify`]) or incrementally as
//! bytes arrive ([`Verifier`]). Kept apart because every reader trusts a
//! journal only through this code.

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::record::{Event, Record};
use super::{format_ms, now_ms, sha256_hex, JournalError, FORMAT_VERSION, GENESIS};

/// Builds record `seq` and its canonical line (secrets masked, hash set).
pub fn encode(seq: u64, prev: &str, event: Event) -> Result<(Record, Vec<u8>), JournalError> {
    let ts_ms = now_ms();
    let mut rec = Record {
        v: FORMAT_VERSION,
        seq,
        ts: format_ms(ts_ms),
        ts_ms,
        prev: prev.to_string(),
        event,
        hash: String::new(),
    };
    let bad = |e: serde_json::Error| JournalError::BadRecord {
        line: 0,
        reason: e.to_string(),
    };
    let mut value = serde_json::to_value(&rec).map_err(bad)?;
    crate::secret::redact_json(&mut value);
    let Value::Object(mut obj) = value else {
        return Err(JournalError::BadRecord {
            line: 0,
            reason: "record is not an object".into(),
        });
    };
    obj.remove("hash");
    let hash = sha256_hex(&serde_json::to_vec(&obj).map_err(bad)?);
    obj.insert("hash".into(), Value::String(hash.clone()));
    let line = serde_json::to_vec(&obj).map_err(bad)?;
    rec.hash = hash;
    Ok((rec, line))
}

/// A journal read back and verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub records: Vec<Record>,
    /// Hash of the last record: the chain head a report quotes.
    pub head: String,
    /// Bytes of an incomplete final line (a write torn by power loss).
    pub torn_tail: usize,
    pub complete_len: usize,
}

/// Verifies a journal incrementally: feed it bytes as they arrive (a
/// `status --follow` poll reads only new records), and it checks each
/// complete line against the chain so far. Cost is linear in the bytes fed.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_prev: String,
    next_seq: u64,
    line_no: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_prev: GENESIS.to_string(),
            next_seq: 0,
            line_no: 0,
        }
    }
}

impl Verifier {
    /// Verifies the complete lines in `bytes` (which must start at a line
    /// boundary) and returns their records and the length of an incomplete
    /// final line, which is not consumed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(Vec<Record>, usize), JournalError> {
        let mut records = Vec::new();
        let torn = self.feed_each(bytes, |r| records.push(r))?;
        Ok((records, torn))
    }

    /// [`Self::feed`] without keeping the records: each verified record is
    /// handed to `each` in order, so a reader that folds them (status,
    /// reports) holds one record at a time, not the whole journal.
    pub fn feed_each(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(Record),
    ) -> Result<usize, JournalError> {
        let mut pos = 0;
        while let Some(nl) = bytes[pos..].iter().position(|b| *b == b'\n') {
            self.line_no += 1;
            let (rec, computed) = check_record(&bytes[pos..pos + nl], self.line_no)?;
            each(self.link(rec, &computed)?);
            pos += nl + 1;
        }
        Ok(bytes.len() - pos)
    }

    /// The hash of the last verified record.
    pub fn head(&self) -> &str {
        &self.expected_prev
    }

    pub fn records(&self) -> u64 {
        self.next_seq
    }

    /// The checks that need the records before this one: sequence, hash
    /// against the chain, `prev`, and the first record's kind.
    fn link(&mut self, rec: Record, computed: &str) -> Result<Record, JournalError> {
        let line_no = self.line_no;
        if rec.seq != self.next_seq {
            return Err(JournalError::SequenceGap {
                line: line_no,
                expected: self.next_seq,
                found: rec.seq,
            });
        }
        if computed != rec.hash {
            return Err(JournalError::RecordHash {
                line: line_no,
                seq: rec.seq,
            });
        }
        if rec.prev != self.expected_prev {
            return Err(JournalError::ChainBroken {
                line: line_no,
                seq: rec.seq,
                expected: self.expected_prev.clone(),
                found: rec.prev,
            });
        }
        if rec.seq == 0 && !matches!(rec.event, Event::RunStarted { .. }) {
            return Err(JournalError::NoStart);
        }
        self.expected_prev = rec.hash.clone();
        self.next_seq += 1;
        Ok(rec)
    }
}

/// The checks one line decides alone: JSON, canonical form, the record's
/// fields and format version. Returns the record and the hash its bytes
/// give, which [`Verifier::link`] compares with the stored one.
fn check_record(line: &[u8], line_no: usize) -> Result<(Record, String), JournalError> {
    let bad = |reason: String| JournalError::BadRecord {
        line: line_no,
        reason,
    };
    let value: Value = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
    let not_canonical = || bad("record is not in canonical form (edited?)".into());
    let Value::Object(mut obj) = value else {
        if serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))? != line {
            return Err(not_canonical());
        }
        return Err(bad("record is not a JSON object".into()));
    };
    // Lines are written in canonical form (compact, sorted keys); any
    // other spelling of the same JSON was produced by an edit. One
    // serialization, member by member as serde_json writes a map, both
    // checks that and finds the `hash` member: the record's hash is over
    // the same bytes without it (what `encode` hashed).
    let (canon, hash_span) = canonical_members(&obj).map_err(|e| bad(e.to_string()))?;
    if canon != line {
        return Err(not_canonical());
    }
    let stored = match obj.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return Err(bad("record has no hash".into())),
    };
    let computed = match hash_span {
        Some((from, to)) => {
            let mut h = Sha256::new();
            h.update(&canon[..from]);
            h.update(&canon[to..]);
            hex::encode(h.finalize())
        }
        None => sha256_hex(&canon),
    };
    let rec = record_of(obj, stored).map_err(bad)?;
    if rec.v > FORMAT_VERSION {
        return Err(JournalError::UnsupportedVersion {
            line: line_no,
            version: rec.v,
        });
    }
    Ok((rec, computed))
}

/// The record in `obj` (already without its `hash`). The envelope's
/// fields are taken out by hand and only the event goes through serde:
/// `Record`'s derived `flatten` buffers every member once more before the
/// internally tagged `Event` buffers them again, which was a third of the
/// cost of reading a journal.
fn record_of(mut obj: Map<String, Value>, hash: String) -> Result<Record, String> {
    fn take_u64(obj: &mut Map<String, Value>, k: &str) -> Result<u64, String> {
        match obj.remove(k) {
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| format!("`{k}` is not a non-negative integer")),
            Some(_) => Err(format!("`{k}` is not a number")),
            None => Err(format!("missing field `{k}`")),
        }
    }
    fn take_str(obj: &mut Map<String, Value>, k: &str) -> Result<String, String> {
        match obj.remove(k) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(format!("`{k}` is not a string")),
            None => Err(format!("missing field `{k}`")),
        }
    }
    let v = take_u64(&mut obj, "v")?;
    let v = u32::try_from(v).map_err(|_| format!("`v` {v} is out of range"))?;
    let seq = take_u64(&mut obj, "seq")?;
    let ts = take_str(&mut obj, "ts")?;
    let ts_ms = take_u64(&mut obj, "ts_ms")?;
    let prev = take_str(&mut obj, "prev")?;
    let event = Event::deserialize(Value::Object(obj)).map_err(|e| e.to_string())?;
    Ok(Record {
        v,
        seq,
        ts,
        ts_ms,
        prev,
        event,
        hash,
    })
}

/// A byte range `[from, to)`.
type Span = (usize, usize);

/// `obj` serialized as `serde_json::to_vec` does (compact; a map's members
/// in key order), and the byte range of its `hash` member with one
/// adjoining comma, so that removing the range leaves the serialization
/// of `obj` without it.
fn canonical_members(
    obj: &Map<String, Value>,
) -> Result<(Vec<u8>, Option<Span>), serde_json::Error> {
    let mut out = Vec::with_capacity(512);
    let mut span = None;
    out.push(b'{');
    for (i, (k, v)) in obj.iter().enumerate() {
        let start = out.len();
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k)?;
        out.push(b':');
        serde_json::to_writer(&mut out, v)?;
        if k == "hash" {
            // First member: take the comma that follows it instead.
            let end = if i == 0 && obj.len() > 1 {
                out.len() + 1
            } else {
                out.len()
            };
            span = Some((start, end));
        }
    }
    out.push(b'}');
    Ok((out, span))
}

/// Parses and verifies the whole chain.
pub fn verify(bytes: &[u8]) -> Result<Verified, JournalError> {
    let mut v = Verifier::default();
    let (records, torn_tail) = v.feed(bytes)?;
    if records.is_empty() {
        // Empty, or one torn line: a first write that never completed.
        return Err(JournalError::NeverStarted);
    }
    Ok(Verified {
        records,
        head: v.expected_prev,
        torn_tail,
        complete_len: bytes.len() - torn_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{FileRef, RunOptions, RunStatus};

    /// Encodes events into journal bytes without a store.
    fn lines(events: Vec<Event>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for (seq, e) in events.into_iter().enumerate() {
            let (rec, line) = encode(seq as u64, &prev, e).unwrap();
            prev = rec.hash;
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        out
    }

    fn sample() -> Vec<u8> {
        lines(vec![
            Event::RunStarted {
                run_id: "r".into(),
                runbook: FileRef {
                    name: "x".into(),
                    path: "x.yaml".into(),
                    sha256: "00".into(),
                },
                environment: None,
                mode: crate::runbook::model::Mode::Drill,
                operator: "op".into(),
                host: "h".into(),
                pid: 1,
                params: Map::new(),
                target_region: None,
                source_region: None,
                options: RunOptions::default(),
                failed_at_ms: None,
                rto_target_ms: None,
                rpo_target_ms: None,
                drctl_version: "0".into(),
                lease_mode: None,
                proofs: None,
            },
            Event::StepStarted {
                step: "a".into(),
                action: "wait".into(),
                inputs: Value::Null,
            },
            Event::RunFinished {
                status: RunStatus::Succeeded,
                reason: None,
            },
        ])
    }

    /// run_started, then `n` step_started records.
    fn long(n: usize) -> Vec<u8> {
        let mut events = vec![verify(&sample()).unwrap().records.remove(0).event];
        events.extend((0..n).map(|i| Event::StepStarted {
            step: format!("s{i}"),
            action: "wait".into(),
            inputs: serde_json::json!({"i": i}),
        }));
        lines(events)
    }

    /// Each line fed alone: the reference for a whole feed.
    fn one_by_one(bytes: &[u8]) -> Result<Vec<u64>, String> {
        let mut v = Verifier::default();
        let mut seqs = Vec::new();
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            v.feed_each(line, |r| seqs.push(r.seq))
                .map_err(|e| e.to_string())?;
        }
        Ok(seqs)
    }

    #[test]
    fn a_journal_fed_whole_or_line_by_line_reports_the_same_first_error() {
        let good = long(4000);
        let all = |b: &[u8]| {
            let mut seqs = Vec::new();
            Verifier::default()
                .feed_each(b, |r| seqs.push(r.seq))
                .map(|_| seqs)
                .map_err(|e| e.to_string())
        };
        assert_eq!(all(&good), one_by_one(&good));
        assert_eq!(all(&good).unwrap().len(), 4001);
        // Two damaged lines: the first in the file is the one reported.
        let offsets: Vec<usize> = std::iter::once(0)
            .chain(
                good.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        for (early, late) in [(3500, 3900), (100, 3900), (2100, 1900)] {
            let mut bad = good.clone();
            bad[offsets[late] + 2] = b'X';
            bad[offsets[early] + 2] = b'X';
            let (a, b) = (all(&bad), one_by_one(&bad));
            assert_eq!(a, b);
            let first = early.min(late) + 1;
            assert!(
                a.unwrap_err().contains(&format!("line {first}")),
                "{early} {late}"
            );
        }
        // A record removed: a sequence gap, at the line after the cut.
        let mut cut = good[..offsets[3000]].to_vec();
        cut.extend_from_slice(&good[offsets[3001]..]);
        assert_eq!(all(&cut), one_by_one(&cut));
        assert!(all(&cut).unwrap_err().contains("line 3001"));
    }

    #[test]
    fn verifies_clean_journal() {
        let v = verify(&sample()).unwrap();
        assert_eq!(v.records.len(), 3);
        assert_eq!(v.torn_tail, 0);
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let good = sample();
        let mut undetected = Vec::new();
        for i in 0..good.len() {
            let mut bad = good.clone();
            // Flip to a different printable byte so JSON often stays valid.
            bad[i] = if bad[i] == b'0' {
                b'1'
            } else if bad[i] == b'\n' {
                b' '
            } else {
                b'0'
            };
            if let Ok(v) = verify(&bad) {
                if v.torn_tail == 0 {
                    undetected.push(i);
                }
            }
        }
        assert!(
            undetected.is_empty(),
            "undetected changes at byte offsets {undetected:?}"
        );
    }

    /// The one-pass serialization is serde_json's, and cutting the hash
    /// member out of it gives serde_json's serialization without it,
    /// wherever the member sits.
    #[test]
    fn canonical_members_match_serde_json_with_and_without_the_hash() {
        for text in [
            r#"{"event":{"a":[1,"x"]},"hash":"ab","prev":"cd","v":1}"#,
            r#"{"hash":"ab","prev":"cd"}"#,
            r#"{"a":1,"hash":"ab"}"#,
            r#"{"hash":"ab"}"#,
            r#"{"a":"no hash \u0001 é"}"#,
        ] {
            let Value::Object(mut obj) = serde_json::from_str::<Value>(text).unwrap() else {
                panic!()
            };
            let (canon, span) = canonical_members(&obj).unwrap();
            assert_eq!(canon, serde_json::to_vec(&obj).unwrap(), "{text}");
            let had = obj.remove("hash").is_some();
            assert_eq!(span.is_some(), had, "{text}");
            if let Some((from, to)) = span {
                let cut = [&canon[..from], &canon[to..]].concat();
                assert_eq!(cut, serde_json::to_vec(&obj).unwrap(), "{text}");
            }
        }
    }

    #[test]
    fn torn_tail_is_reported_not_trusted() {
        let mut b = sample();
        b.extend_from_slice(b"{\"v\":1,\"seq\":3");
        let v = verify(&b).unwrap();
        assert_eq!(v.records.len(), 3);
        assert!(v.torn_tail > 0);
    }
}
