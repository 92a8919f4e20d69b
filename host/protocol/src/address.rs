//! Envelope addresses: reverse-path, forward-path, mailbox, local part and domain.
//! Trusts no input: every string is hostile network data and is validated against
//! the grammar and the size limits. Implements RFC 5321 §4.1.2 (Path, Mailbox,
//! Local-part, Domain), §4.1.3 (address literals), §4.5.3.1.1-3 (size limits) and
//! RFC 6531 §3.3 (UTF-8 in atext, qtext and domain labels).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path in octets, angle brackets included (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;
/// Longest domain label in octets (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The path is not enclosed in `<` and `>`.
    #[error("angle brackets required")]
    MissingAngleBrackets,
    /// Nothing where an address was expected.
    #[error("empty address")]
    Empty,
    /// The local part breaks the Dot-string / Quoted-string grammar.
    #[error("bad local part")]
    BadLocalPart,
    /// The local part exceeds [`MAX_LOCAL_PART`] octets.
    #[error("local part too long")]
    LocalPartTooLong,
    /// No `@` after the local part.
    #[error("missing @ domain")]
    MissingAt,
    /// The domain breaks the sub-domain grammar.
    #[error("bad domain")]
    BadDomain,
    /// The domain exceeds [`MAX_DOMAIN`] octets.
    #[error("domain too long")]
    DomainTooLong,
    /// A domain label exceeds [`MAX_LABEL`] octets.
    #[error("domain label too long")]
    LabelTooLong,
    /// A `[...]` literal that is not IPv4, `IPv6:` or a general literal.
    #[error("bad address literal")]
    BadAddressLiteral,
    /// The path exceeds [`MAX_PATH`] octets.
    #[error("path too long")]
    PathTooLong,
    /// A malformed `@a,@b:` source route.
    #[error("bad source route")]
    BadSourceRoute,
}

/// The domain part of a mailbox, or a HELO argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A domain name exactly as written (one trailing dot is kept).
    Name(String),
    /// `[192.0.2.1]`
    Ipv4(Ipv4Addr),
    /// `[IPv6:2001:db8::1]`
    Ipv6(Ipv6Addr),
    /// `[tag:content]` (RFC 5321 General-address-literal)
    General {
        /// The Standardized-tag.
        tag: String,
        /// The dcontent after the colon.
        content: String,
    },
}

/// UTF-8 allowed by RFC 6531 (non-ASCII); control characters (C1) are refused.
fn is_utf8_text(c: char) -> bool {
    !c.is_ascii() && !c.is_control()
}

/// RFC 5322 atext, extended with UTF-8 by RFC 6531.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_text(c)
}

/// RFC 5321 qtextSMTP (%d32-33 / %d35-91 / %d93-126), extended with UTF-8.
fn is_qtext(c: char) -> bool {
    matches!(c, ' ' | '!' | '#'..='[' | ']'..='~') || is_utf8_text(c)
}

/// Let-dig [Ldh-str] with UTF-8 letters allowed (RFC 6531).
fn check_label(label: &str) -> Result<(), AddressError> {
    if label.is_empty() {
        return Err(AddressError::BadDomain);
    }
    if label.len() > MAX_LABEL {
        return Err(AddressError::LabelTooLong);
    }
    let ok = label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_utf8_text(c));
    if !ok || label.starts_with('-') || label.ends_with('-') {
        return Err(AddressError::BadDomain);
    }
    Ok(())
}

/// RFC 5321 Ldh-str used as Standardized-tag (must start and end with a let-dig).
fn is_ldh_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !tag.starts_with('-')
        && !tag.ends_with('-')
}

fn parse_literal(inner: &str) -> Result<Domain, AddressError> {
    let bad = AddressError::BadAddressLiteral;
    match inner.split_once(':') {
        Some((tag, content)) if tag.eq_ignore_ascii_case("IPv6") => {
            if !content
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(bad);
            }
            content.parse().map(Domain::Ipv6).map_err(|_| bad)
        }
        Some((tag, content)) => {
            // dcontent = %d33-90 / %d94-126
            let dcontent = |c: char| matches!(c, '!'..='Z' | '^'..='~');
            if !is_ldh_tag(tag) || content.is_empty() || !content.chars().all(dcontent) {
                return Err(bad);
            }
            Ok(Domain::General {
                tag: tag.to_owned(),
                content: content.to_owned(),
            })
        }
        None => {
            // std rejects leading zeros, so "010.0.0.1" cannot mean octal anywhere.
            if !inner.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return Err(bad);
            }
            inner.parse().map(Domain::Ipv4).map_err(|_| bad)
        }
    }
}

impl Domain {
    /// Parse a domain name or an address literal (the whole string).
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        if s.is_empty() {
            return Err(AddressError::BadDomain);
        }
        if s.len() > MAX_DOMAIN {
            return Err(AddressError::DomainTooLong);
        }
        if let Some(rest) = s.strip_prefix('[') {
            let inner = rest
                .strip_suffix(']')
                .ok_or(AddressError::BadAddressLiteral)?;
            return parse_literal(inner);
        }
        let body = s.strip_suffix('.').unwrap_or(s);
        if body.is_empty() {
            return Err(AddressError::BadDomain);
        }
        body.split('.').try_for_each(check_label)?;
        Ok(Domain::Name(s.to_owned()))
    }

    /// True for `[...]` address literals.
    pub fn is_literal(&self) -> bool {
        !matches!(self, Domain::Name(_))
    }

    /// The name as written, for [`Domain::Name`].
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Domain::Name(n) => Some(n),
            _ => None,
        }
    }

    /// Lower-cased name without trailing dot for comparisons; literals in their
    /// canonical display form.
    pub fn normalized(&self) -> String {
        match self {
            Domain::Name(n) => n.strip_suffix('.').unwrap_or(n).to_lowercase(),
            other => other.to_string(),
        }
    }

    /// True when the domain contains no UTF-8 (literals are always ASCII).
    pub fn is_ascii(&self) -> bool {
        match self {
            Domain::Name(n) => n.is_ascii(),
            Domain::General { tag, content } => tag.is_ascii() && content.is_ascii(),
            Domain::Ipv4(_) | Domain::Ipv6(_) => true,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Ipv4(a) => write!(f, "[{a}]"),
            Domain::Ipv6(a) => write!(f, "[IPv6:{a}]"),
            Domain::General { tag, content } => write!(f, "[{tag}:{content}]"),
        }
    }
}

/// `local-part@domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part exactly as on the wire (a quoted string keeps quotes and escapes).
    pub local_part: String,
    /// The domain.
    pub domain: Domain,
}

/// Byte index just past the closing quote of the Quoted-string starting `s`.
fn quoted_end(s: &str) -> Result<usize, AddressError> {
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok(i.saturating_add(1)),
            '\\' => match chars.next() {
                Some((_, ' '..='~')) => {}
                _ => return Err(AddressError::BadLocalPart),
            },
            c if is_qtext(c) => {}
            _ => return Err(AddressError::BadLocalPart),
        }
    }
    Err(AddressError::BadLocalPart)
}

/// Split `s` into (local part, rest starting at the character after it).
fn split_local_part(s: &str) -> Result<(&str, &str), AddressError> {
    let end = if s.starts_with('"') {
        quoted_end(s)?
    } else {
        s.find(|c: char| !(is_atext(c) || c == '.'))
            .unwrap_or(s.len())
    };
    let (local, rest) = s.split_at_checked(end).ok_or(AddressError::BadLocalPart)?;
    if !local.starts_with('"') && local.split('.').any(str::is_empty) {
        // empty, leading, trailing or doubled dot
        return Err(AddressError::BadLocalPart);
    }
    Ok((local, rest))
}

impl Mailbox {
    /// Parse a bare mailbox `user@example.com` (no angle brackets).
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let (local, rest) = split_local_part(s)?;
        let domain = match rest.strip_prefix('@') {
            Some(d) => d,
            None if rest.is_empty() => return Err(AddressError::MissingAt),
            None => return Err(AddressError::BadLocalPart),
        };
        if local.len() > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong);
        }
        Ok(Mailbox {
            local_part: local.to_owned(),
            domain: Domain::parse(domain)?,
        })
    }

    /// True when the local part is a Quoted-string.
    pub fn is_quoted(&self) -> bool {
        self.local_part.starts_with('"')
    }

    /// The semantic local part: quotes removed, quoted-pairs unescaped.
    pub fn local_part_unquoted(&self) -> String {
        let Some(inner) = self
            .local_part
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
        else {
            return self.local_part.clone();
        };
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.extend(chars.next());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// True when neither part contains UTF-8 (no SMTPUTF8 needed).
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// The inside of `<...>` after checking brackets and the path length.
fn path_inner(s: &str) -> Result<&str, AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    let inner = s
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .ok_or(AddressError::MissingAngleBrackets)?;
    if s.len() > MAX_PATH {
        return Err(AddressError::PathTooLong);
    }
    Ok(inner)
}

/// Validate and drop an RFC 5321 A-d-l source route (`@a,@b:`), returning the mailbox.
fn strip_source_route(inner: &str) -> Result<&str, AddressError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let bad = AddressError::BadSourceRoute;
    let mut rest = inner;
    loop {
        let after_at = rest.strip_prefix('@').ok_or(bad.clone())?;
        let end = if after_at.starts_with('[') {
            after_at.find(']').map(|i| i.saturating_add(1))
        } else {
            after_at.find([',', ':'])
        }
        .ok_or(bad.clone())?;
        let (domain, tail) = after_at.split_at_checked(end).ok_or(bad.clone())?;
        Domain::parse(domain).map_err(|_| bad.clone())?;
        if let Some(next) = tail.strip_prefix(',') {
            rest = next;
        } else if let Some(mailbox) = tail.strip_prefix(':') {
            return Ok(mailbox);
        } else {
            return Err(bad);
        }
    }
}

/// The MAIL FROM path: `<>` or a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications.
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox),
}

impl ReversePath {
    /// Parse `<>` or `<[route:]mailbox>` (angle brackets required).
    pub fn parse(s: &str) -> Result<ReversePath, AddressError> {
        let inner = path_inner(s)?;
        if inner.is_empty() {
            return Ok(ReversePath::Null);
        }
        Mailbox::parse(strip_source_route(inner)?).map(ReversePath::Mailbox)
    }

    /// The mailbox, unless null.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(m),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

/// The RCPT TO path: `<Postmaster>` or a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<Postmaster>` without domain (RFC 5321 §4.5.1), any case.
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Mailbox),
}

impl ForwardPath {
    /// Parse `<Postmaster>` or `<[route:]mailbox>` (angle brackets required).
    pub fn parse(s: &str) -> Result<ForwardPath, AddressError> {
        let inner = path_inner(s)?;
        if inner.is_empty() {
            return Err(AddressError::Empty);
        }
        if inner.eq_ignore_ascii_case("postmaster") {
            return Ok(ForwardPath::Postmaster);
        }
        Mailbox::parse(strip_source_route(inner)?).map(ForwardPath::Mailbox)
    }

    /// The mailbox, unless `<Postmaster>`.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(m) => Some(m),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<Postmaster>"),
            ForwardPath::Mailbox(m) => write!(f, "<{m}>"),
        }
    }
}

#[cfg(test)]
mod tests;
