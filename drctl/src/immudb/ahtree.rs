//! The append-only hash tree over Alh values (SPEC §3).
//!
//! The verifiers are ports of immudb's algorithms rather than a generic RFC 6962
//! crate: immudb's consistency proofs carry an extra first term when the old size
//! is a power of two, it returns non-empty proofs for equal sizes, and it omits
//! RFC 9162's final `sn == 0` check. `rs_merkle` was not used because its tree
//! shape (odd node promoted, no 0x00/0x01 domain prefixes) differs from this one.
//!
//! `MemAhTree` is an in-memory prover with the same shape, used by tests and by
//! the benchmarks to synthesize proofs for very large tx ids.

use crate::immudb::hash::{leaf_hash, node_hash, Digest};

/// Inclusion of leaf `i` (1-based) in the tree of size `j` whose root is `root_j`.
pub fn verify_inclusion(proof: &[Digest], i: u64, j: u64, leaf: &Digest, root_j: &Digest) -> bool {
    if i > j || i == 0 || (i < j && proof.is_empty()) {
        return false;
    }
    let mut a = i - 1;
    let mut b = j - 1;
    let mut c = *leaf;
    for h in proof {
        if a & 1 == 0 && a != b {
            c = node_hash(&c, h);
        } else {
            c = node_hash(h, &c);
        }
        a >>= 1;
        b >>= 1;
    }
    &c == root_j
}

/// Inclusion of the last leaf `j` in the tree of size `j`.
pub fn verify_last_inclusion(proof: &[Digest], j: u64, leaf: &Digest, root_j: &Digest) -> bool {
    if j == 0 {
        return false;
    }
    let mut c = *leaf;
    for h in proof {
        c = node_hash(h, &c);
    }
    &c == root_j
}

/// Consistency between tree sizes `i <= j` (immudb's variant, see module docs).
pub fn verify_consistency(
    proof: &[Digest],
    i: u64,
    j: u64,
    root_i: &Digest,
    root_j: &Digest,
) -> bool {
    if i > j || i == 0 || (i < j && proof.is_empty()) {
        return false;
    }
    if i == j && proof.is_empty() {
        return root_i == root_j;
    }
    let mut fnode = i - 1;
    let mut snode = j - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut ci = proof[0];
    let mut cj = proof[0];
    for h in &proof[1..] {
        if fnode & 1 == 1 || fnode == snode {
            ci = node_hash(h, &ci);
            cj = node_hash(h, &cj);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            cj = node_hash(&cj, h);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    &ci == root_i && &cj == root_j
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    let mut k = 1u64;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// In-memory ahtree with every perfect aligned subtree cached, so roots and
/// proofs for any size cost O(log² n) hashes after an O(n) build.
#[derive(Debug, Clone, Default)]
pub struct MemAhTree {
    levels: Vec<Vec<Digest>>,
}

impl MemAhTree {
    pub fn new() -> Self {
        Self {
            levels: vec![Vec::new()],
        }
    }

    /// Builds the tree over the given Alh values (leaf 1 = `alhs[0]`).
    pub fn from_alhs(alhs: &[Digest]) -> Self {
        let mut t = Self::new();
        for a in alhs {
            t.append(a);
        }
        t
    }

    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// Appends an Alh and completes every perfect subtree it closes.
    pub fn append(&mut self, alh: &Digest) {
        self.levels[0].push(leaf_hash(alh));
        let mut k = 0;
        while self.levels[k].len() & 1 == 0 {
            let n = self.levels[k].len();
            let parent = node_hash(&self.levels[k][n - 2], &self.levels[k][n - 1]);
            if self.levels.len() == k + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[k + 1].push(parent);
            k += 1;
        }
    }

    /// Merkle tree hash of leaves `[lo, hi)` (0-based), `hi > lo`.
    fn mth(&self, lo: u64, hi: u64) -> Digest {
        let n = hi - lo;
        if n.is_power_of_two() && lo & (n - 1) == 0 {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(lo >> k) as usize];
        }
        let k = split_point(n);
        node_hash(&self.mth(lo, lo + k), &self.mth(lo + k, hi))
    }

    /// Root of the tree of size `n` (1 <= n <= len).
    pub fn root(&self, n: u64) -> Option<Digest> {
        (n >= 1 && n <= self.len()).then(|| self.mth(0, n))
    }

    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Digest>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, lo, lo + k, out);
            out.push(self.mth(lo + k, hi));
        } else {
            self.path(m - k, lo + k, hi, out);
            out.push(self.mth(lo, lo + k));
        }
    }

    /// Inclusion proof of leaf `i` (1-based) in the tree of size `j`.
    pub fn inclusion_proof(&self, i: u64, j: u64) -> Option<Vec<Digest>> {
        if i == 0 || i > j || j > self.len() {
            return None;
        }
        let mut out = Vec::new();
        self.path(i - 1, 0, j, &mut out);
        Some(out)
    }

    fn subproof(&self, m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Digest>) {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(self.mth(lo, hi));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, lo, lo + k, complete, out);
            out.push(self.mth(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.mth(lo, lo + k));
        }
    }

    /// Consistency proof from size `i` to size `j` in immudb's form (the old root
    /// is sent as first term when `i` is a power of two; for `i == j > 1` the
    /// two subtree roots under the root, right then left, where RFC 9162 sends
    /// nothing: SPEC §3.4).
    pub fn consistency_proof(&self, i: u64, j: u64) -> Option<Vec<Digest>> {
        if i == 0 || i > j || j > self.len() {
            return None;
        }
        if i == j {
            if j == 1 {
                return Some(Vec::new());
            }
            let k = split_point(j);
            return Some(vec![self.mth(k, j), self.mth(0, k)]);
        }
        let mut out = Vec::new();
        if i.is_power_of_two() {
            out.push(self.mth(0, i));
        }
        self.subproof(i, 0, j, true, &mut out);
        Some(out)
    }
}
