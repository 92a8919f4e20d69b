//! Lists the member names of a zip archive from its central directory
//! (PKWARE APPNOTE 6.3.x §4.3.12 central directory header, §4.3.16 end of
//! central directory, §4.3.14-15 ZIP64), without decompressing anything.
//! Trusts nothing: every offset and length is bounds-checked; at most
//! `max_entries` names are read.

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CDH_SIG: u32 = 0x0201_4b50;
const EOCD_LEN: usize = 22;
const CDH_LEN: usize = 46;

/// Whether `data` starts like a zip file (local header or empty archive).
pub fn looks_like_zip(data: &[u8]) -> bool {
    data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06")
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The position of the end-of-central-directory record: searched backwards
/// over the last 22 + 65535 bytes (the longest archive comment).
fn find_eocd(d: &[u8]) -> Option<usize> {
    if d.len() < EOCD_LEN {
        return None;
    }
    let lowest = d.len().saturating_sub(EOCD_LEN + 0xffff);
    (lowest..=d.len() - EOCD_LEN)
        .rev()
        .find(|&i| u32_at(d, i) == Some(EOCD_SIG))
}

/// (entry count, central directory size, central directory offset), from
/// the ZIP64 record when the classic one says so.
fn directory(d: &[u8], eocd: usize) -> Option<(u64, u64, u64)> {
    let entries = u64::from(u16_at(d, eocd + 10)?);
    let size = u64::from(u32_at(d, eocd + 12)?);
    let offset = u64::from(u32_at(d, eocd + 16)?);
    let zip64 = entries == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff;
    if zip64 && eocd >= 20 && u32_at(d, eocd - 20) == Some(ZIP64_LOCATOR_SIG) {
        let rec = usize::try_from(u64_at(d, eocd - 20 + 8)?).ok()?;
        if u32_at(d, rec) == Some(ZIP64_EOCD_SIG) {
            return Some((
                u64_at(d, rec + 32)?,
                u64_at(d, rec + 40)?,
                u64_at(d, rec + 48)?,
            ));
        }
    }
    Some((entries, size, offset))
}

/// The member names of the archive in `d`; `None` when it is not a zip
/// archive this parser understands.
pub fn member_names(d: &[u8], max_entries: usize) -> Option<Vec<String>> {
    let eocd = find_eocd(d)?;
    let (entries, size, offset) = directory(d, eocd)?;
    // Data prepended to the archive (self-extractors) shifts every offset:
    // trust the stated offset only when a directory header is there.
    let stated = usize::try_from(offset).ok();
    let derived = usize::try_from(size).ok().and_then(|s| eocd.checked_sub(s));
    let start = [stated, derived]
        .into_iter()
        .flatten()
        .find(|&at| u32_at(d, at) == Some(CDH_SIG));
    let Some(mut at) = start else {
        return (entries == 0).then(Vec::new);
    };
    let mut names = Vec::new();
    while names.len() < max_entries && (names.len() as u64) < entries {
        if u32_at(d, at) != Some(CDH_SIG) {
            break;
        }
        let flags = u16_at(d, at + 8)?;
        let name_len = usize::from(u16_at(d, at + 28)?);
        let extra_len = usize::from(u16_at(d, at + 30)?);
        let comment_len = usize::from(u16_at(d, at + 32)?);
        let name_start = at + CDH_LEN;
        let raw = d.get(name_start..name_start + name_len)?;
        names.push(decode_name(raw, flags & 0x0800 != 0));
        at = name_start + name_len + extra_len + comment_len;
    }
    Some(names)
}

/// UTF-8 when flag bit 11 says so (or when it happens to be valid UTF-8);
/// otherwise CP437, whose non-ASCII half cannot form an ASCII extension, so
/// it maps to U+FFFD.
fn decode_name(raw: &[u8], utf8: bool) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) if utf8 => String::from_utf8_lossy(raw).into_owned(),
        Err(_) => raw
            .iter()
            .map(|&b| if b.is_ascii() { b as char } else { '\u{fffd}' })
            .collect(),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal "stored" (uncompressed) zip writer for tests: local
    /// headers, data, central directory, end record. CRCs are left zero —
    /// the scanner never checks them.
    pub fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let offset = out.len() as u32;
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method, time, date
            out.extend_from_slice(&0u32.to_le_bytes()); // crc
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);

            central.extend_from_slice(&CDH_SIG.to_le_bytes());
            central.extend_from_slice(&[20, 0, 20, 0]); // made by, needed
            central.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
            central.extend_from_slice(&[0; 6]); // method, time, date
            central.extend_from_slice(&0u32.to_le_bytes()); // crc
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 4]); // extra, comment lengths
            central.extend_from_slice(&[0; 8]); // disk, attrs
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn lists_names() {
        let z = stored_zip(&[("readme.txt", b"hi"), ("bin/setup.exe", b"MZ")]);
        assert!(looks_like_zip(&z));
        assert_eq!(
            member_names(&z, 100),
            Some(vec!["readme.txt".to_string(), "bin/setup.exe".to_string()])
        );
        assert_eq!(member_names(&z, 1).unwrap().len(), 1);
    }

    #[test]
    fn prepended_data_and_comment() {
        let z = stored_zip(&[("a.js", b"x")]);
        let mut sfx = b"MZ fake self-extractor stub".to_vec();
        sfx.extend_from_slice(&z);
        assert_eq!(member_names(&sfx, 10), Some(vec!["a.js".to_string()]));
        // An archive comment after the end record.
        let mut commented = z.clone();
        let n = commented.len();
        commented[n - 2..].copy_from_slice(&5u16.to_le_bytes());
        commented.extend_from_slice(b"hello");
        assert_eq!(member_names(&commented, 10), Some(vec!["a.js".to_string()]));
    }

    #[test]
    fn empty_and_broken() {
        let empty = stored_zip(&[]);
        assert_eq!(member_names(&empty, 10), Some(vec![]));
        assert_eq!(member_names(b"not a zip at all", 10), None);
        assert_eq!(member_names(b"", 10), None);
        let z = stored_zip(&[("a.exe", b"x")]);
        // Truncated in the middle of the directory: every cut is survived.
        for cut in 0..z.len() {
            let _ = member_names(&z[..cut], 10);
        }
        // Lying lengths.
        let mut lying = z.clone();
        let cd = u32_at(&z, z.len() - 6).unwrap() as usize;
        lying[cd + 28..cd + 30].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(member_names(&lying, 10), None);
    }

    #[test]
    fn cp437_names() {
        assert_eq!(decode_name(b"caf\x82.exe", false), "caf\u{fffd}.exe");
        assert_eq!(decode_name("café.exe".as_bytes(), true), "café.exe");
    }
}
