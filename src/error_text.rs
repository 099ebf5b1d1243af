//! Turning an error and its causes into one line for a person. Shared by the etcd and
//! storage modules (and everything above them), so it depends on neither.

/// An error and its causes on one line, each cause once (libraries often repeat their
/// source in their own message).
pub fn full_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    s
}
