//! The EICAR anti-virus test signature (eicar.org's 68-byte test file),
//! searched for in decoded content. Trusts nothing; a linear-time substring
//! search with no allocation.

/// The EICAR test string.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The name reported for it.
pub const NAME: &str = "EICAR-Test-File";

/// Whether `data` contains the EICAR string.
pub fn contains_eicar(data: &[u8]) -> bool {
    find(data, EICAR)
}

/// Linear-time substring search (memchr's two-way / SIMD `memmem`): a
/// message made of the signature's first byte repeated cannot make the scan
/// quadratic.
fn find(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_signature() {
        assert_eq!(EICAR.len(), 68);
        assert!(contains_eicar(EICAR));
        let mut hay = b"XXXX5O!P noise X5O!P".to_vec();
        hay.extend_from_slice(EICAR);
        hay.extend_from_slice(b"\r\n");
        assert!(contains_eicar(&hay));
        assert!(!contains_eicar(&EICAR[..67]));
        assert!(!contains_eicar(&EICAR[1..]));
        assert!(!contains_eicar(b""));
        assert!(find(b"abc", b""));
        assert!(find(b"abcabd", b"abd"));
        assert!(!find(b"abcab", b"abd"));
    }
}
