//! SMTP command parsing: one framed command line (CRLF removed) into a typed
//! [`Command`], or a [`CommandError`] that knows its exact SMTP reply. Trusts no
//! input: control characters, invalid UTF-8 and 8-bit data outside the places
//! RFC 6531 allows are refused. Implements RFC 5321 §4.1.1 (commands), §4.1.2
//! (command argument syntax), §4.1.4 (case-insensitive verbs), §4.2.3 / §4.2.4
//! (500/501/502 replies), RFC 3207 (STARTTLS), RFC 4954 §4 (AUTH), RFC 6531 §3.3.

use crate::address::{AddressError, ForwardPath, ReversePath};
use crate::params::{MailParams, ParamError, RcptParams, parse_params};
use crate::reply::{EnhancedCode, Reply};

/// A parsed SMTP command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain`
    Helo(String),
    /// `EHLO domain`
    Ehlo(String),
    /// `MAIL FROM:<path> [params]`
    MailFrom {
        /// The reverse-path.
        path: ReversePath,
        /// Interpreted ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> [params]`
    RcptTo {
        /// The forward-path.
        path: ForwardPath,
        /// Interpreted ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`
    Data,
    /// `BDAT chunk-size [LAST]` (RFC 3030): `size` octets of message data
    /// follow the command line at once.
    Bdat {
        /// The chunk's size in octets.
        size: u64,
        /// This chunk ends the message.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]` (the argument is ignored)
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy(String),
    /// `EXPN string`
    Expn(String),
    /// `HELP [string]`
    Help(Option<String>),
    /// `STARTTLS` (RFC 3207)
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954); `=` gives `Some("")`.
    Auth {
        /// The SASL mechanism, upper-cased.
        mechanism: String,
        /// The base64 initial response as written.
        initial_response: Option<String>,
    },
}

/// Why a command line was refused; [`CommandError::reply`] gives the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Unknown verb.
    #[error("command unrecognized")]
    Unrecognized,
    /// A known RFC verb this server does not implement (upper-cased verb).
    #[error("{0} not implemented")]
    NotImplemented(String),
    /// Bad arguments; the message is fixed text (never echoes input).
    #[error("{0}")]
    Syntax(String),
    /// Bad RCPT TO path.
    #[error("bad recipient address: {0}")]
    Address(AddressError),
    /// Bad MAIL FROM path (replied with 5.1.7 instead of 5.1.3).
    #[error("bad sender address: {0}")]
    SenderAddress(AddressError),
    /// Bad MAIL/RCPT parameters.
    #[error("{0}")]
    Params(ParamError),
    /// Control characters, invalid UTF-8, or 8-bit data where not allowed.
    #[error("invalid characters in command")]
    NonAscii,
}

impl CommandError {
    /// The address error of a bad MAIL FROM or RCPT TO path.
    pub fn address_error(&self) -> Option<&AddressError> {
        match self {
            CommandError::Address(e) | CommandError::SenderAddress(e) => Some(e),
            _ => None,
        }
    }

    /// The exact reply the server should send.
    pub fn reply(&self) -> Reply {
        let ec = |c, s, d| Some(EnhancedCode::new(c, s, d));
        match self {
            CommandError::Unrecognized => Reply::new(500, ec(5, 5, 1), "Command unrecognized"),
            CommandError::NotImplemented(verb) => {
                Reply::new(502, ec(5, 5, 1), format!("{verb} command not implemented"))
            }
            CommandError::Syntax(msg) => Reply::new(501, ec(5, 5, 4), msg.clone()),
            CommandError::Address(e) => Reply::new(
                501,
                ec(5, 1, 3),
                format!("Bad recipient address syntax: {e}"),
            ),
            CommandError::SenderAddress(e) => {
                Reply::new(501, ec(5, 1, 7), format!("Bad sender address syntax: {e}"))
            }
            CommandError::Params(e) => Reply::new(501, ec(5, 5, 4), format!("Bad parameters: {e}")),
            CommandError::NonAscii => Reply::new(500, ec(5, 5, 2), "Invalid characters in command"),
        }
    }
}

fn syntax(msg: &str) -> CommandError {
    CommandError::Syntax(msg.to_owned())
}

/// Parse one command line (without CRLF).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let text = std::str::from_utf8(line).map_err(|_| CommandError::NonAscii)?;
    // C0 controls (TAB and bare CR/LF included), DEL and C1 controls.
    if text.chars().any(char::is_control) {
        return Err(CommandError::NonAscii);
    }
    let text = text.trim_matches(' ');
    let (verb, args) = match text.split_once(' ') {
        Some((verb, args)) => (verb, args.trim_start_matches(' ')),
        None => (text, ""),
    };
    if !verb.is_ascii() {
        return Err(CommandError::NonAscii);
    }
    let verb = verb.to_ascii_uppercase();
    let utf8_args = matches!(
        verb.as_str(),
        "HELO" | "EHLO" | "MAIL" | "RCPT" | "VRFY" | "EXPN"
    );
    let known = utf8_args
        || matches!(
            verb.as_str(),
            "DATA" | "RSET" | "NOOP" | "QUIT" | "HELP" | "STARTTLS" | "AUTH" | "BDAT"
        );
    if known && !utf8_args && !args.is_ascii() {
        return Err(CommandError::NonAscii);
    }
    match verb.as_str() {
        "HELO" => one_token(args, "Syntax: HELO domain").map(Command::Helo),
        "EHLO" => one_token(args, "Syntax: EHLO domain").map(Command::Ehlo),
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => no_args(args, Command::Data, "Syntax: DATA (no arguments)"),
        "RSET" => no_args(args, Command::Rset, "Syntax: RSET (no arguments)"),
        "QUIT" => no_args(args, Command::Quit, "Syntax: QUIT (no arguments)"),
        "STARTTLS" => no_args(args, Command::StartTls, "Syntax: STARTTLS (no arguments)"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help((!args.is_empty()).then(|| args.to_owned()))),
        "VRFY" => required(args, "Syntax: VRFY string").map(Command::Vrfy),
        "EXPN" => required(args, "Syntax: EXPN string").map(Command::Expn),
        "AUTH" => parse_auth(args),
        "BDAT" => parse_bdat(args),
        "TURN" | "SEND" | "SOML" | "SAML" | "ETRN" | "ATRN" => {
            Err(CommandError::NotImplemented(verb))
        }
        _ => Err(CommandError::Unrecognized),
    }
}

/// `BDAT chunk-size [LAST]`: the size is 1 to 20 digits (RFC 3030 §3:
/// `1*DIGIT`, bounded here to what a u64 holds).
fn parse_bdat(args: &str) -> Result<Command, CommandError> {
    const MSG: &str = "Syntax: BDAT chunk-size [LAST]";
    let mut words = args.split(' ');
    let size = words
        .next()
        .filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| syntax(MSG))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax(MSG)),
    };
    if words.next().is_some() {
        return Err(syntax(MSG));
    }
    Ok(Command::Bdat { size, last })
}

fn no_args(args: &str, cmd: Command, msg: &str) -> Result<Command, CommandError> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(syntax(msg))
    }
}

fn required(args: &str, msg: &str) -> Result<String, CommandError> {
    if args.is_empty() {
        Err(syntax(msg))
    } else {
        Ok(args.to_owned())
    }
}

fn one_token(args: &str, msg: &str) -> Result<String, CommandError> {
    if args.is_empty() || args.contains(' ') {
        Err(syntax(msg))
    } else {
        Ok(args.to_owned())
    }
}

/// Case-insensitive ASCII prefix strip.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Byte index of the `>` closing the path that starts `s` with `<`; a `>` inside a
/// quoted local part or an address literal does not close it.
fn path_end(s: &str) -> Option<usize> {
    let (mut quoted, mut escaped, mut literal) = (false, false, false);
    for (i, c) in s.char_indices() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if literal {
            literal = c != ']';
        } else {
            match c {
                '"' => quoted = true,
                '[' => literal = true,
                '>' => return Some(i),
                _ => {}
            }
        }
    }
    None
}

/// Split `prefix<path> params` into the path (brackets included) and the parameter
/// text; `wrap` turns address errors into the sender or recipient variant.
fn split_path<'a>(
    args: &'a str,
    prefix: &str,
    usage: &str,
    wrap: fn(AddressError) -> CommandError,
) -> Result<(&'a str, &'a str), CommandError> {
    let rest = strip_prefix_ci(args, prefix).ok_or_else(|| syntax(usage))?;
    let rest = rest.trim_start_matches(' ');
    if rest.is_empty() {
        return Err(syntax(usage));
    }
    let missing = || wrap(AddressError::MissingAngleBrackets);
    if !rest.starts_with('<') {
        return Err(missing());
    }
    let end = path_end(rest).ok_or_else(missing)?;
    let (path, params) = rest
        .split_at_checked(end.saturating_add(1))
        .ok_or_else(missing)?;
    if !params.is_empty() && !params.starts_with(' ') {
        return Err(syntax("Syntax: a space must follow the address"));
    }
    Ok((path, params))
}

fn parse_mail(args: &str) -> Result<Command, CommandError> {
    let wrap = CommandError::SenderAddress;
    let (path, params) = split_path(args, "FROM:", "Syntax: MAIL FROM:<address>", wrap)?;
    let path = ReversePath::parse(path).map_err(wrap)?;
    let params = parse_params(params)
        .and_then(MailParams::from_params)
        .map_err(CommandError::Params)?;
    Ok(Command::MailFrom { path, params })
}

fn parse_rcpt(args: &str) -> Result<Command, CommandError> {
    let wrap = CommandError::Address;
    let (path, params) = split_path(args, "TO:", "Syntax: RCPT TO:<address>", wrap)?;
    let path = ForwardPath::parse(path).map_err(wrap)?;
    let params = parse_params(params)
        .and_then(RcptParams::from_params)
        .map_err(CommandError::Params)?;
    Ok(Command::RcptTo { path, params })
}

/// RFC 4422 §3.1 mechanism name: 1*20 of upper-case letters, digits, "-" and "_"
/// (accepted in any case).
fn is_sasl_mechanism(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_auth(args: &str) -> Result<Command, CommandError> {
    let mut tokens = args.split(' ').filter(|t| !t.is_empty());
    let mechanism = tokens
        .next()
        .ok_or_else(|| syntax("Syntax: AUTH mechanism [initial-response]"))?;
    if !is_sasl_mechanism(mechanism) {
        return Err(syntax("Invalid SASL mechanism name"));
    }
    let initial_response = tokens.next().map(|t| {
        if t == "=" {
            String::new()
        } else {
            t.to_owned()
        }
    });
    if tokens.next().is_some() {
        return Err(syntax("Syntax: AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response,
    })
}

#[cfg(test)]
mod tests;
