//! The EICAR anti-virus test signature (eicar.org's 68-byte test file),
//! searched for in decoded content. Trusts nothing; a plain substring search
//! with no allocation.

/// The EICAR test string.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The name reported for it.
pub const NAME: &str = "EICAR-Test-File";

/// Whether `data` contains the EICAR string.
pub fn contains_eicar(data: &[u8]) -> bool {
    find(data, EICAR)
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    let (first, rest) = match needle.split_first() {
        Some(x) => x,
        None => return true,
    };
    if hay.len() < needle.len() {
        return false;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|b| b == first) {
            None => return false,
            Some(p) => {
                i += p;
                if &hay[i + 1..i + needle.len()] == rest {
                    return true;
                }
                i += 1;
            }
        }
    }
    false
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
