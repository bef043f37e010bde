//! Schema decoding: the syntax tree to the typed [`Policy`] IR. Every scalar
//! gets its type from the schema here; unknown keys, wrong types and bad
//! values become diagnostics, and decoding goes on so that one run reports
//! every error. Semantic checks across rules live in `check`.

mod fields;
mod network;
mod security;
pub mod switches;
mod top;

pub(crate) use fields::Decoder;
pub(crate) use top::decode_policy;
