//! The per-transaction entries hash tree (SPEC §2.3). Its shape differs from the
//! ahtree: an odd node at the end of a level is copied up unchanged instead of
//! being paired, so `Eh` of a 3-entry tx is `node(node(l0,l1), l2)`.

use crate::immudb::hash::{leaf_hash, node_hash, Digest, SHA256_EMPTY};

/// `Eh` of a tx from its entry digests, in entry order.
pub fn entries_root(digests: &[Digest]) -> Digest {
    if digests.is_empty() {
        return SHA256_EMPTY;
    }
    let mut level: Vec<Digest> = digests.iter().map(|d| leaf_hash(d)).collect();
    while level.len() > 1 {
        let next = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [single] => *single,
                _ => unreachable!("chunks(2) yields 1 or 2 items"),
            })
            .collect();
        level = next;
    }
    level[0]
}

/// Verifies that `digest` is entry number `leaf` (0-based) of a tx whose entries
/// tree has `width` leaves and root `root`. Terms are bottom-up.
pub fn verify_htree_inclusion(
    leaf: u64,
    width: u64,
    terms: &[Digest],
    digest: &Digest,
    root: &Digest,
) -> bool {
    if width == 0 || leaf >= width {
        return false;
    }
    let mut c = leaf_hash(digest);
    let mut i = leaf;
    let mut r = width - 1;
    for t in terms {
        if i & 1 == 0 && i != r {
            c = node_hash(&c, t);
        } else {
            c = node_hash(t, &c);
        }
        i /= 2;
        r /= 2;
    }
    i == r && &c == root
}

/// Builds the inclusion proof of entry `leaf` (for tests and fixtures).
pub fn htree_inclusion_proof(digests: &[Digest], leaf: usize) -> Option<Vec<Digest>> {
    if leaf >= digests.len() {
        return None;
    }
    let mut level: Vec<Digest> = digests.iter().map(|d| leaf_hash(d)).collect();
    let mut i = leaf;
    let mut terms = Vec::new();
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            terms.push(level[sibling]);
        }
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [single] => *single,
                _ => unreachable!("chunks(2) yields 1 or 2 items"),
            })
            .collect();
        i /= 2;
    }
    Some(terms)
}
