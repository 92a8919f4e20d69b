//! Scans a raw message: parses it with mail-parser (RFC 5322 / RFC 2045-2049,
//! RFC 2231 parameters), walks nested multiparts and message/rfc822 parts
//! within depth and part limits, and checks every part's file names,
//! declared type, zip member names and decoded content (EICAR). Trusts
//! nothing: the message is hostile and only its decoded form is judged.

use std::fmt;

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

use crate::config::Settings;
use crate::eicar;
use crate::names::{blocked_extension, display};
use crate::neutral::{content_type_lines, has_mime_headers, neutralize};
use crate::zip;

/// Longest file name shown in a reason.
const NAME_MAX: usize = 100;
/// Most zip members examined per archive.
const ZIP_MAX_ENTRIES: usize = 10_000;

/// Why a message is refused (or tagged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A part named with a blocked extension.
    Extension { name: String, ext: String },
    /// A part of a blocked declared type.
    ContentType { name: Option<String>, ctype: String },
    /// A zip member with a blocked extension.
    ArchiveMember {
        archive: Option<String>,
        member: String,
        ext: String,
    },
    /// A known signature in decoded content.
    Virus(&'static str),
    /// MIME nesting beyond `max_depth`.
    TooDeep(usize),
    /// More MIME parts than `max_parts`.
    TooManyParts(usize),
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = |n: &str| format!("\"{}\"", display(n, NAME_MAX));
        match self {
            Finding::Extension { name, ext } => write!(
                f,
                "attachment {} has a blocked extension (.{})",
                quoted(name),
                display(ext, 32)
            ),
            Finding::ContentType {
                name: Some(name),
                ctype,
            } => write!(
                f,
                "attachment {} has a blocked content type ({})",
                quoted(name),
                display(ctype, 100)
            ),
            Finding::ContentType { name: None, ctype } => write!(
                f,
                "a part has a blocked content type ({})",
                display(ctype, 100)
            ),
            Finding::ArchiveMember {
                archive,
                member,
                ext,
            } => {
                match archive {
                    Some(a) => write!(f, "archive {}", quoted(a))?,
                    None => write!(f, "an archive")?,
                }
                write!(
                    f,
                    " contains {} with a blocked extension (.{})",
                    quoted(member),
                    display(ext, 32)
                )
            }
            Finding::Virus(name) => write!(f, "virus {name} found"),
            Finding::TooDeep(max) => {
                write!(f, "MIME structure nested more than {max} levels deep")
            }
            Finding::TooManyParts(max) => write!(f, "more than {max} MIME parts"),
        }
    }
}

/// Scan a whole raw message; the first finding, if any.
pub fn scan(raw: &[u8], settings: &Settings) -> Option<Finding> {
    let mut walker = Walker { settings, parts: 0 };
    walker.bytes(raw, 0).err()
}

/// Drop a parsed message without recursion: nested messages are moved out
/// onto a heap stack first, so hostile nesting cannot exhaust the stack.
fn dismantle(message: Message<'_>) {
    let mut stack = vec![message];
    while let Some(mut m) = stack.pop() {
        for part in m.parts.iter_mut() {
            if let PartType::Message(_) = part.body
                && let PartType::Message(inner) =
                    std::mem::replace(&mut part.body, PartType::Multipart(Vec::new()))
            {
                stack.push(inner);
            }
        }
    }
}

struct Walker<'s> {
    settings: &'s Settings,
    parts: usize,
}

impl Walker<'_> {
    /// A message in raw form, `depth` levels down: parse it (with the
    /// constructs that make the parser recurse renamed, see `neutral`), walk
    /// it, and look for the signature in the raw text too (a non-MIME body,
    /// a malformed part).
    fn bytes(&mut self, data: &[u8], depth: usize) -> Result<(), Finding> {
        if depth > self.settings.max_depth {
            return Err(Finding::TooDeep(self.settings.max_depth));
        }
        // No Content-* field anywhere: no MIME structure (no parts, names or
        // encodings, RFC 2045), so the parse is skipped and only the text is
        // searched.
        if !has_mime_headers(data) {
            return match eicar::contains_eicar(data) {
                true => Err(Finding::Virus(eicar::NAME)),
                false => Ok(()),
            };
        }
        if content_type_lines(data) > self.settings.max_parts {
            return Err(Finding::TooManyParts(self.settings.max_parts));
        }
        let neutral = neutralize(data);
        let parsed = MessageParser::new().with_mime_headers().parse(&neutral[..]);
        let walked = match &parsed {
            Some(message) => self.message(message, depth),
            None => Ok(()),
        };
        if let Some(message) = parsed {
            dismantle(message);
        }
        walked?;
        if eicar::contains_eicar(data) {
            return Err(Finding::Virus(eicar::NAME));
        }
        Ok(())
    }

    /// Every part of `message` (nested `depth` levels deep), in order.
    fn message(&mut self, message: &Message<'_>, depth: usize) -> Result<(), Finding> {
        let n = message.parts.len();
        // Multipart depth of each part within this message; children always
        // follow their parent in `parts`.
        let mut level = vec![0usize; n];
        let mut in_digest = vec![false; n];
        for (i, part) in message.parts.iter().enumerate() {
            self.parts += 1;
            if self.parts > self.settings.max_parts {
                return Err(Finding::TooManyParts(self.settings.max_parts));
            }
            let here = depth + level[i];
            if here > self.settings.max_depth {
                return Err(Finding::TooDeep(self.settings.max_depth));
            }
            self.part(part)?;
            match &part.body {
                PartType::Multipart(children) => {
                    let digest = declared_type(part).as_deref() == Some("multipart/digest");
                    for &c in children {
                        let c = c as usize;
                        if c > i && c < n {
                            level[c] = level[i] + 1;
                            in_digest[c] = digest;
                        }
                    }
                }
                PartType::Message(inner) => self.message(inner, here + 1)?,
                _ if is_message(part, in_digest[i]) => self.bytes(part.contents(), here + 1)?,
                _ => self.content(part)?,
            }
        }
        Ok(())
    }

    /// Names and declared type of one part.
    fn part(&self, part: &MessagePart<'_>) -> Result<(), Finding> {
        let s = self.settings;
        for name in part_names(part) {
            if let Some(ext) = blocked_extension(name, &s.blocked_extensions) {
                return Err(Finding::Extension {
                    name: name.to_string(),
                    ext,
                });
            }
        }
        if let Some(ctype) = declared_type(part)
            && s.blocked_types.contains(&ctype)
        {
            return Err(Finding::ContentType {
                name: part_names(part).next().map(str::to_string),
                ctype,
            });
        }
        Ok(())
    }

    /// Decoded content of a leaf part: the signature, then zip members.
    fn content(&self, part: &MessagePart<'_>) -> Result<(), Finding> {
        let data = part.contents();
        if eicar::contains_eicar(data) {
            return Err(Finding::Virus(eicar::NAME));
        }
        if self.settings.scan_archives && is_zip(part, data) {
            let names = zip::member_names(data, ZIP_MAX_ENTRIES).unwrap_or_default();
            for member in names {
                if let Some(ext) = blocked_extension(&member, &self.settings.blocked_extensions) {
                    return Err(Finding::ArchiveMember {
                        archive: part_names(part).next().map(str::to_string),
                        member,
                        ext,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Every file name a part carries: Content-Disposition `filename` and
/// Content-Type `name` (RFC 2231 and RFC 2047 forms decoded by the parser).
/// A client may show either, so both are checked.
fn part_names<'p>(part: &'p MessagePart<'_>) -> impl Iterator<Item = &'p str> {
    let disposition = part.content_disposition().and_then(|d| d.attributes());
    let ctype = part.content_type().and_then(|c| c.attributes());
    disposition
        .into_iter()
        .flatten()
        .filter(|a| a.name == "filename")
        .chain(ctype.into_iter().flatten().filter(|a| a.name == "name"))
        .map(|a| a.value.as_ref())
        .filter(|v| !v.is_empty())
}

/// "type/subtype" as declared, lower-case (names renamed by `neutral`
/// restored).
fn declared_type(part: &MessagePart<'_>) -> Option<String> {
    let ct = part.content_type()?;
    let mut t = match ct.ctype().to_ascii_lowercase() {
        x if x == "xessage" => "message".to_string(),
        x => x,
    };
    if let Some(sub) = ct.subtype() {
        let sub = sub.to_ascii_lowercase();
        t.push('/');
        t.push_str(if t == "multipart/" && sub == "xigest" {
            "digest"
        } else {
            &sub
        });
    }
    Some(t)
}

/// A part the parser left opaque that holds a message: a renamed encoded
/// message/rfc822 or message/global, or an untyped digest child.
fn is_message(part: &MessagePart<'_>, in_digest: bool) -> bool {
    match declared_type(part) {
        Some(t) => t == "message/rfc822" || t == "message/global",
        None => in_digest,
    }
}

/// Declared as zip, named .zip, or starting with a zip signature.
fn is_zip(part: &MessagePart<'_>, data: &[u8]) -> bool {
    let declared = declared_type(part).is_some_and(|t| {
        matches!(
            t.as_str(),
            "application/zip" | "application/x-zip" | "application/x-zip-compressed"
        )
    });
    declared
        || part_names(part).any(|n| crate::names::extension(n).as_deref() == Some("zip"))
        || zip::looks_like_zip(data)
}

#[cfg(test)]
mod tests;
