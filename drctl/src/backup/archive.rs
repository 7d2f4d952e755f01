//! A WAL archive directory as `archive_command` fills it (`cp %p DIR/%f`):
//! the newest archived segment is the independent expectation a restore is
//! held to. Recovery that stops before it (a segment missing in the middle,
//! a corrupt one) has restored an old point, although PostgreSQL promotes
//! and reports success.

use std::path::Path;
use std::time::SystemTime;

/// A WAL segment file name: timeline, log and segment number (24 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegName {
    pub timeline: u32,
    pub log: u32,
    pub seg: u32,
}

impl SegName {
    pub fn parse(name: &str) -> Option<SegName> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(SegName {
            timeline: u32::from_str_radix(&name[0..8], 16).ok()?,
            log: u32::from_str_radix(&name[8..16], 16).ok()?,
            seg: u32::from_str_radix(&name[16..24], 16).ok()?,
        })
    }

    /// The LSN where this segment starts, for a segment size in bytes.
    pub fn start_lsn(&self, seg_size: u64) -> u64 {
        (u64::from(self.log) << 32) + u64::from(self.seg) * seg_size
    }

    /// Segment number across log files, for counting gaps.
    pub fn number(&self, seg_size: u64) -> u64 {
        self.start_lsn(seg_size) / seg_size
    }
}

/// What the archive holds, as far as the expectation needs.
#[derive(Debug, Clone)]
pub struct ArchiveView {
    pub segments: Vec<SegName>,
    /// The newest segment (highest timeline, then position) and when it
    /// was archived (its file's mtime), when known.
    pub newest: Option<(SegName, Option<SystemTime>)>,
    pub bytes: u64,
    /// Where the view comes from, for the report's method.
    pub what: String,
}

pub fn scan(dir: &Path) -> std::io::Result<ArchiveView> {
    let mut segments = Vec::new();
    let mut newest: Option<(SegName, Option<SystemTime>)> = None;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(s) = SegName::parse(&name) else {
            continue;
        };
        let md = e.metadata()?;
        bytes += md.len();
        segments.push(s);
        if newest.is_none_or(|(n, _)| s > n) {
            newest = Some((s, Some(md.modified()?)));
        }
    }
    segments.sort();
    Ok(ArchiveView {
        what: format!("{} segments in {}", segments.len(), dir.display()),
        segments,
        newest,
        bytes,
    })
}

/// `X/Y` text form of an LSN.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_and_lsns() {
        let s = SegName::parse("000000010000000200000003").unwrap();
        assert_eq!(s.timeline, 1);
        let size = 16 * 1024 * 1024;
        assert_eq!(lsn_text(s.start_lsn(size)), "2/3000000");
        assert_eq!(parse_lsn("2/3000000"), Some(s.start_lsn(size)));
        assert!(SegName::parse("00000001000000020000000.partial").is_none());
        assert!(SegName::parse("00000002.history").is_none());
        assert!(SegName::parse("000000020000000000000001") > Some(s));
    }
}
