//! Error types. `VerifyError` variants name the exact check that failed so that
//! drctl can report *why* a DR replica was rejected, not just that it was.

use thiserror::Error;

/// A proof, signature or state check failed, or the input could not be decoded.
///
/// Every variant except `Malformed` means "the data was well-formed but does not
/// prove what it claims"; `Malformed` means the server sent something we could not
/// even interpret. Both must be treated as a failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("malformed input: field `{field}`: {reason}")]
    Malformed { field: String, reason: String },

    #[error("unsupported tx header version {version} in tx {tx}")]
    UnsupportedHeaderVersion { tx: u64, version: i64 },

    #[error("state signature is missing but a public key is pinned")]
    SignatureMissing,

    #[error("state signature does not verify: {reason}")]
    SignatureInvalid { reason: String },

    #[error("pinned public key is unusable: {reason}")]
    PublicKeyInvalid { reason: String },

    #[error("database name mismatch: trusted `{trusted}`, got `{got}`")]
    DatabaseMismatch { trusted: String, got: String },

    #[error("Alh mismatch at tx {tx}")]
    AlhMismatch { tx: u64 },

    #[error("ahtree inclusion proof failed (leaf {leaf}, tree size {tree_size})")]
    InclusionProofFailed { leaf: u64, tree_size: u64 },

    #[error("ahtree consistency proof failed (size {from_size} -> {to_size})")]
    ConsistencyProofFailed { from_size: u64, to_size: u64 },

    #[error("ahtree last-inclusion proof failed (tree size {tree_size})")]
    LastInclusionProofFailed { tree_size: u64 },

    #[error("entries hash tree check failed: {reason}")]
    EntriesProofFailed { reason: String },

    #[error("linear proof failed: {reason}")]
    LinearProofFailed { reason: String },

    #[error("linear-advance proof failed: {reason}")]
    LinearAdvanceProofFailed { reason: String },

    #[error("dual proof failed: {reason}")]
    DualProofFailed { reason: String },

    #[error("dual proof v2 failed: {reason}")]
    DualProofV2Failed { reason: String },

    #[error("replica sent no proof from the trusted checkpoint to its state")]
    ProofMissing,
}

impl VerifyError {
    /// Shorthand used by all decoders.
    pub fn malformed(field: impl Into<String>, reason: impl Into<String>) -> Self {
        VerifyError::Malformed {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Failure talking to an immudb HTTP gateway. Verification failures of the
/// fetched data are wrapped in `Verify` so callers get one error type from the
/// high-level check.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid client configuration: {0}")]
    Config(String),

    #[error("request to {url} timed out after {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u128 },

    #[error("transport error for {url}: {reason}")]
    Transport { url: String, reason: String },

    #[error("HTTP {status} from {url}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },

    #[error("response from {url} exceeds {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },

    #[error("undecodable response from {url}: {reason}")]
    Decode { url: String, reason: String },

    #[error("not logged in (call open_session first)")]
    NotLoggedIn,

    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl ClientError {
    /// immudb could not be asked: the connection, a timeout, TLS or an HTTP
    /// error status (the gateway answers a refused login and an unknown
    /// session with 5xx too). Nothing was verified, so this is an outage or a
    /// configuration problem, never evidence of tampering.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. }
                | ClientError::Transport { .. }
                | ClientError::Status { .. }
        )
    }
}
