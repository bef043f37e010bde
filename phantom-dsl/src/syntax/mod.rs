//! Syntax: text to a spanned tree ([`tree`]), and the canonical printer
//! used by `phantom-policy fmt` ([`print`]).

mod block;
mod inline;
mod lines;
pub mod print;
pub mod tree;

pub use block::parse_document;
pub use tree::{Document, Entry, Item, Node, NodeKind, Scalar, ScalarStyle, Trivia};
