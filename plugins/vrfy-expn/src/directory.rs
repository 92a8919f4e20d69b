//! The operator's directory behind trusted VRFY/EXPN answers: mailboxes that
//! exist and mailing lists with their members, validated at load time so
//! every answer is a valid SMTP reply. Input: the configuration (validated
//! here) and the VRFY/EXPN argument (client-controlled, never echoed).
//! RFC 5321 §3.5.1–§3.5.3 (VRFY/EXPN semantics, "User ambiguous", lists vs
//! users), §4.5.3.1 (path and reply limits), RFC 3463 §3.2 (X.1.x codes).

use std::collections::BTreeMap;

/// The host refuses reply text longer than this (see `types.wit`).
pub const MAX_REPLY_TEXT: usize = 400;

/// What a VRFY argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VrfyAnswer {
    /// Exactly one mailbox, as configured.
    Mailbox(String),
    /// A bare user name that matches several mailboxes.
    Ambiguous,
    /// A mailing list (EXPN is the command for those).
    List,
    Unknown,
}

/// What an EXPN argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpnAnswer {
    /// The list's reply text: `<m1>, <m2>, ...`.
    Members(String),
    /// A mailbox, not a list.
    Mailbox,
    Unknown,
}

struct Mailbox {
    address: String,
    local: String,
    domain: String,
}

#[derive(Default)]
pub struct Directory {
    mailboxes: Vec<Mailbox>,
    /// Normalised list name → reply text.
    lists: BTreeMap<String, String>,
}

/// Check the form of a configured address: `local-part@domain`, printable,
/// no spaces, no `<`, `>` or `,`, at most 254 bytes (RFC 5321 §4.5.3.1.3).
pub fn check_address(address: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{address:?} is not a mailbox address ({why})"));
    if address.len() > 254 {
        return bad("longer than 254 bytes");
    }
    if let Some(c) = address
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | ','))
    {
        return bad(&format!("contains {c:?}"));
    }
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(()),
        _ => bad("expected local-part@domain"),
    }
}

/// The argument without surrounding space and angle brackets:
/// `Jane <jane@example.org>` and `<jane@example.org>` give `jane@example.org`.
pub fn bare(argument: &str) -> &str {
    let t = argument.trim();
    match (t.rfind('<'), t.rfind('>')) {
        (Some(open), Some(close)) if open < close => t[open + 1..close].trim(),
        _ => t,
    }
}

/// Lower-cased, and without a trailing dot on the domain.
fn normalise(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.trim_end_matches('.')),
        None => lower,
    }
}

impl Directory {
    /// Build and validate; errors name the configuration key.
    pub fn new(
        mailboxes: &[String],
        lists: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let mut dir = Directory::default();
        for (i, m) in mailboxes.iter().enumerate() {
            check_address(m).map_err(|e| format!("mailboxes[{i}]: {e}"))?;
            let (local, domain) = m.rsplit_once('@').unwrap_or_default();
            dir.mailboxes.push(Mailbox {
                address: m.clone(),
                local: local.to_ascii_lowercase(),
                domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            });
        }
        for (name, members) in lists {
            if name.trim().is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "lists: {name:?} is not a list name (no spaces allowed)"
                ));
            }
            if members.is_empty() {
                return Err(format!("lists.{name:?} has no members"));
            }
            for (i, m) in members.iter().enumerate() {
                check_address(m).map_err(|e| format!("lists.{name:?}[{i}]: {e}"))?;
            }
            let text = members
                .iter()
                .map(|m| format!("<{m}>"))
                .collect::<Vec<_>>()
                .join(", ");
            if text.len() > MAX_REPLY_TEXT {
                return Err(format!(
                    "lists.{name:?}: the EXPN reply would be {} bytes, more than the {MAX_REPLY_TEXT} bytes an SMTP reply line may carry here; shorten or split the list",
                    text.len()
                ));
            }
            let key = normalise(bare(name));
            if dir.lists.insert(key, text).is_some() {
                return Err(format!(
                    "lists.{name:?}: another list has the same name (names are case-insensitive)"
                ));
            }
        }
        Ok(dir)
    }

    fn find_mailboxes(&self, argument: &str) -> Vec<&Mailbox> {
        let arg = bare(argument);
        match arg.rsplit_once('@') {
            Some((local, domain)) => {
                let domain = domain.trim_end_matches('.');
                self.mailboxes
                    .iter()
                    .filter(|m| {
                        m.local.eq_ignore_ascii_case(local) && m.domain.eq_ignore_ascii_case(domain)
                    })
                    .collect()
            }
            None => self
                .mailboxes
                .iter()
                .filter(|m| m.local.eq_ignore_ascii_case(arg))
                .collect(),
        }
    }

    pub fn vrfy(&self, argument: &str) -> VrfyAnswer {
        let found = self.find_mailboxes(argument);
        match found.as_slice() {
            [one] => VrfyAnswer::Mailbox(one.address.clone()),
            [] if self.lists.contains_key(&normalise(bare(argument))) => VrfyAnswer::List,
            [] => VrfyAnswer::Unknown,
            _ => VrfyAnswer::Ambiguous,
        }
    }

    pub fn expn(&self, argument: &str) -> ExpnAnswer {
        if let Some(text) = self.lists.get(&normalise(bare(argument))) {
            return ExpnAnswer::Members(text.clone());
        }
        if self.find_mailboxes(argument).is_empty() {
            ExpnAnswer::Unknown
        } else {
            ExpnAnswer::Mailbox
        }
    }
}
