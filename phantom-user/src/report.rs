//! Enforcement reports: what each layer actually enforces on this host.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Everything the policy asks of the layer is enforced.
    Full,
    /// Some of it, following best effort; `reason` says what is missing.
    Partial,
    /// Nothing: the kernel lacks the mechanism.
    None,
}
