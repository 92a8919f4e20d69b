//! What data-stage plugins asked to change (`postern:policy@0.2.0`), applied
//! to an accepted message before it is spooled: the envelope (sender,
//! recipients) and the header section the message arrived with (fields
//! removed or replaced). The Received field and the fields plugins add are
//! not affected. Input: changes from plugins, already checked for shape by
//! the runtime; addresses are parsed here like MAIL FROM/RCPT TO arguments.

use postern_plugin::{EnvelopeChange, HeaderChange, MessageData};
use postern_protocol::{ForwardPath, Mailbox, ReversePath};

use super::Transaction;
use super::envelope::recipient_text;

/// Apply envelope changes in order. An address that does not parse, or a
/// transaction left without recipients, is refused (the plugin's fault: the
/// message is not accepted as changed, the client is told to retry).
pub(super) fn apply_envelope(
    tx: &mut Transaction,
    changes: &[EnvelopeChange],
) -> Result<(), String> {
    for change in changes {
        match change {
            EnvelopeChange::SetSender(a) if a.is_empty() => tx.sender = ReversePath::Null,
            EnvelopeChange::SetSender(a) => {
                let m = Mailbox::parse(a).map_err(|e| format!("sender {a:?}: {e}"))?;
                tx.sender = ReversePath::Mailbox(m);
            }
            EnvelopeChange::AddRecipient(a) => {
                let p = forward_path(a)?;
                let text = recipient_text(&p);
                if !tx
                    .recipients
                    .iter()
                    .any(|(r, _)| recipient_text(r).eq_ignore_ascii_case(&text))
                {
                    tx.recipients.push((p, Vec::new()));
                }
            }
            EnvelopeChange::RemoveRecipient(a) => {
                let text = recipient_text(&forward_path(a)?);
                tx.recipients
                    .retain(|(r, _)| !recipient_text(r).eq_ignore_ascii_case(&text));
            }
        }
    }
    if tx.recipients.is_empty() {
        return Err("the changes removed every recipient".into());
    }
    Ok(())
}

fn forward_path(a: &str) -> Result<ForwardPath, String> {
    if a.eq_ignore_ascii_case("postmaster") {
        return Ok(ForwardPath::Postmaster);
    }
    Mailbox::parse(a)
        .map(ForwardPath::Mailbox)
        .map_err(|e| format!("recipient {a:?}: {e}"))
}

/// The message's header section (up to and including the blank line that
/// ends it), from memory or its spill file.
pub(super) fn header_section(message: &MessageData) -> std::io::Result<Vec<u8>> {
    let end = message.body_start() as u64;
    let mut out = Vec::with_capacity(end as usize);
    while (out.len() as u64) < end {
        let want = u32::try_from(end - out.len() as u64).unwrap_or(u32::MAX);
        let chunk = message.read(out.len() as u64, want)?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A field of a header section: its raw bytes (folded lines and the final
/// CRLF included) and its name.
type Field<'a> = (&'a [u8], &'a [u8]);

/// The fields of a header section, and what follows them (the blank line).
fn fields(section: &[u8]) -> (Vec<Field<'_>>, &[u8]) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut at = 0;
    let mut start: Option<usize> = None;
    while at < section.len() {
        let end = section[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(section.len(), |i| at + i + 1);
        let line = &section[at..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            if let Some(s) = start {
                fields.push(field(&section[s..at]));
            }
            start = Some(at);
        }
        at = end;
    }
    if let Some(s) = start {
        fields.push(field(&section[s..at]));
    }
    (fields, &section[at..])
}

fn field(raw: &[u8]) -> Field<'_> {
    let name_end = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
    (raw, raw[..name_end].trim_ascii_end())
}

/// The header section with `changes` applied in order: `Remove` drops every
/// field of that name, `Replace` puts its field where the first of that name
/// was and drops the others, or adds it at the top when there was none.
pub(super) fn rewrite_headers(section: &[u8], changes: &[HeaderChange]) -> Vec<u8> {
    let (parsed, rest) = fields(section);
    let mut out: Vec<Vec<u8>> = parsed.iter().map(|(raw, _)| raw.to_vec()).collect();
    let mut names: Vec<Vec<u8>> = parsed.iter().map(|(_, n)| n.to_ascii_lowercase()).collect();
    for change in changes {
        match change {
            HeaderChange::Remove(name) => {
                let n = name.to_ascii_lowercase().into_bytes();
                let keep: Vec<bool> = names.iter().map(|x| *x != n).collect();
                retain(&mut out, &mut names, &keep);
            }
            HeaderChange::Replace(name, value) => {
                let n = name.to_ascii_lowercase().into_bytes();
                let new = format!("{name}: {value}\r\n").into_bytes();
                match names.iter().position(|x| *x == n) {
                    Some(first) => {
                        out[first] = new;
                        let keep: Vec<bool> = names
                            .iter()
                            .enumerate()
                            .map(|(i, x)| i == first || *x != n)
                            .collect();
                        retain(&mut out, &mut names, &keep);
                    }
                    None => {
                        out.insert(0, new);
                        names.insert(0, n);
                    }
                }
            }
            HeaderChange::Change { name, index, value } => {
                let n = name.to_ascii_lowercase().into_bytes();
                let at = names
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| **x == n)
                    .nth((*index as usize).saturating_sub(1))
                    .map(|(i, _)| i);
                match (at, value) {
                    (Some(i), Some(v)) => out[i] = format!("{name}: {v}\r\n").into_bytes(),
                    (Some(i), None) => {
                        out.remove(i);
                        names.remove(i);
                    }
                    // No such field: nothing to change (as in Postfix).
                    (None, _) => {}
                }
            }
        }
    }
    let mut section_out = out.concat();
    section_out.extend_from_slice(rest);
    section_out
}

fn retain(out: &mut Vec<Vec<u8>>, names: &mut Vec<Vec<u8>>, keep: &[bool]) {
    let mut i = 0;
    out.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let mut j = 0;
    names.retain(|_| {
        j += 1;
        keep[j - 1]
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: a@example.org\r\nX-Spam: yes\r\nSubject: hi\r\n there\r\nx-spam: again\r\n\r\nbody\r\n";

    fn section() -> &'static [u8] {
        &MSG[..MSG.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4]
    }

    #[test]
    fn remove_drops_every_field_of_the_name() {
        let changed = rewrite_headers(
            section(),
            &[
                HeaderChange::Change {
                    name: "x-spam".into(),
                    index: 2,
                    value: Some("second".into()),
                },
                HeaderChange::Change {
                    name: "Subject".into(),
                    index: 1,
                    value: None,
                },
                HeaderChange::Change {
                    name: "X-Absent".into(),
                    index: 1,
                    value: None,
                },
            ],
        );
        let text = String::from_utf8(changed).unwrap();
        assert!(!text.contains("Subject:"), "{text}");
        assert_eq!(
            text.matches("X-Spam").count() + text.matches("x-spam").count(),
            2,
            "{text}"
        );
        assert!(text.contains("x-spam: second\r\n"), "{text}");
        let out = rewrite_headers(section(), &[HeaderChange::Remove("X-SPAM".into())]);
        assert_eq!(out, b"From: a@example.org\r\nSubject: hi\r\n there\r\n\r\n");
    }

    #[test]
    fn replace_keeps_the_place_of_the_first_and_drops_the_rest() {
        let cases: [(&str, &str, &[u8]); 2] = [
            (
                "Subject",
                "new",
                b"From: a@example.org\r\nX-Spam: yes\r\nSubject: new\r\nx-spam: again\r\n\r\n",
            ),
            (
                "X-Spam",
                "no",
                b"From: a@example.org\r\nX-Spam: no\r\nSubject: hi\r\n there\r\n\r\n",
            ),
        ];
        for (name, value, expected) in cases {
            let out = rewrite_headers(
                section(),
                &[HeaderChange::Replace(name.into(), value.into())],
            );
            assert_eq!(out, expected, "{name}");
        }
    }

    #[test]
    fn replace_of_a_missing_field_adds_it_at_the_top() {
        let out = rewrite_headers(
            section(),
            &[HeaderChange::Replace("X-New".into(), "1".into())],
        );
        assert!(out.starts_with(b"X-New: 1\r\nFrom: a@example.org\r\n"));
        assert!(out.ends_with(b"x-spam: again\r\n\r\n"));
    }

    #[test]
    fn no_change_gives_the_section_back() {
        assert_eq!(rewrite_headers(section(), &[]), section());
        let bare = b"Subject: no body\r\n";
        assert_eq!(rewrite_headers(bare, &[]), bare);
    }

    #[test]
    fn the_section_of_a_message_ends_with_its_blank_line() {
        let m = MessageData::new(MSG.to_vec());
        assert_eq!(header_section(&m).unwrap(), section());
    }
}
