//! Shared pieces of Phantom's command-line tools: diagnostic rendering (the
//! only place that turns structured diagnostics into text) and the bundle
//! writer of `phantom-policy compile`.

pub mod bundle;
pub mod render;
