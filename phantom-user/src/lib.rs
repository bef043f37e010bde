//! Phantom runtime: loads compiled bundles and spawns sandboxes.
//!
//! Empty until the runtime issue lands.
