//! Shared pieces of Phantom's command-line tools: diagnostic rendering (the
//! only place that turns structured diagnostics into text).

pub mod audit;
pub mod inspect;
pub mod reload;
pub mod render;
