//! cargo xtask: the project's automation.
fn main() {}
