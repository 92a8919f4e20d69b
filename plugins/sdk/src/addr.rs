//! Small helpers for envelope addresses. Input: addresses as the host passed
//! them (already syntax-checked per RFC 5321 §4.1.2).

/// The domain part of `local@domain`, lower-cased, without a trailing dot.
/// Empty for `<>`; address literals keep their brackets.
pub fn domain_of(address: &str) -> String {
    match address.rfind('@') {
        Some(i) => address[i + 1..].trim_end_matches('.').to_ascii_lowercase(),
        None => String::new(),
    }
}

/// Whether `domain` equals `other`, ignoring case and a trailing dot.
pub fn same_domain(domain: &str, other: &str) -> bool {
    domain
        .trim_end_matches('.')
        .eq_ignore_ascii_case(other.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(domain_of("a@Example.ORG."), "example.org");
        assert_eq!(domain_of("\"a@b\"@c.example"), "c.example");
        assert_eq!(domain_of(""), "");
        assert!(same_domain("EXAMPLE.org.", "example.ORG"));
        assert!(!same_domain("example.org", "example.net"));
    }
}
