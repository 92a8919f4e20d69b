//! The milter wire format (Sendmail libmilter protocol version 6, as
//! Postfix speaks it): every packet is a 4-octet big-endian length, one
//! command or reply octet, and its data; strings are NUL-terminated. Pure:
//! no I/O. Input: replies from the milter (untrusted: every length and
//! string is checked, a bad packet is an error, never a panic).

/// Protocol version offered.
pub const VERSION: u32 = 6;
/// Largest packet accepted from a milter (a replaced body chunk is at most
/// 64 KiB; headers and replies are small).
pub const MAX_PACKET: usize = 1 << 20;
/// Largest body chunk sent (libmilter's MILTER_CHUNK_SIZE).
pub const BODY_CHUNK: usize = 65535;

/// Actions the MTA allows (SMFIF_*).
pub mod action {
    pub const ADDHDRS: u32 = 0x01;
    pub const CHGBODY: u32 = 0x02;
    pub const ADDRCPT: u32 = 0x04;
    pub const DELRCPT: u32 = 0x08;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
}

/// Protocol steps (SMFIP_*): what the milter does not want sent, and what
/// it will not answer.
pub mod step {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
}

/// What this client offers: every action, and every step a milter may
/// leave out or leave unanswered (not RCPT_REJ: refused recipients are not
/// sent; not HDR_LEADSPC: header values are sent without their leading
/// space).
pub const OFFERED_ACTIONS: u32 = action::ADDHDRS
    | action::CHGBODY
    | action::ADDRCPT
    | action::DELRCPT
    | action::CHGHDRS
    | action::QUARANTINE
    | action::CHGFROM
    | action::ADDRCPT_PAR
    | action::SETSYMLIST;
pub const OFFERED_STEPS: u32 = step::NOCONNECT
    | step::NOHELO
    | step::NOMAIL
    | step::NORCPT
    | step::NOBODY
    | step::NOHDRS
    | step::NOEOH
    | step::NR_HDR
    | step::NOUNKNOWN
    | step::NODATA
    | step::SKIP
    | step::NR_CONN
    | step::NR_HELO
    | step::NR_MAIL
    | step::NR_RCPT
    | step::NR_DATA
    | step::NR_UNKN
    | step::NR_EOH
    | step::NR_BODY;

/// A command to the milter (SMFIC_*).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    OptNeg {
        actions: u32,
        steps: u32,
    },
    /// Macros for the command `for_cmd` that follows.
    Macro {
        for_cmd: u8,
        pairs: &'a [(String, String)],
    },
    Connect {
        hostname: &'a str,
        addr: Option<std::net::SocketAddr>,
    },
    Helo(&'a str),
    /// `args[0]` is the address in angle brackets, then ESMTP parameters.
    Mail(&'a [String]),
    Rcpt(&'a [String]),
    Data,
    Header {
        name: &'a str,
        value: &'a str,
    },
    EndOfHeaders,
    Body(&'a [u8]),
    EndOfMessage,
    Abort,
    Quit,
}

impl Command<'_> {
    /// The command octet.
    pub fn code(&self) -> u8 {
        match self {
            Command::OptNeg { .. } => b'O',
            Command::Macro { .. } => b'D',
            Command::Connect { .. } => b'C',
            Command::Helo(_) => b'H',
            Command::Mail(_) => b'M',
            Command::Rcpt(_) => b'R',
            Command::Data => b'T',
            Command::Header { .. } => b'L',
            Command::EndOfHeaders => b'N',
            Command::Body(_) => b'B',
            Command::EndOfMessage => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
        }
    }

    /// The whole packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Vec::new();
        let cstr = |d: &mut Vec<u8>, s: &str| {
            // A NUL inside would end the string early: never send one.
            d.extend(s.bytes().filter(|&b| b != 0));
            d.push(0);
        };
        match self {
            Command::OptNeg { actions, steps } => {
                d.extend_from_slice(&VERSION.to_be_bytes());
                d.extend_from_slice(&actions.to_be_bytes());
                d.extend_from_slice(&steps.to_be_bytes());
            }
            Command::Macro { for_cmd, pairs } => {
                d.push(*for_cmd);
                for (k, v) in pairs.iter() {
                    cstr(&mut d, k);
                    cstr(&mut d, v);
                }
            }
            Command::Connect { hostname, addr } => {
                cstr(&mut d, hostname);
                match addr {
                    Some(a) => {
                        d.push(if a.is_ipv4() { b'4' } else { b'6' });
                        d.extend_from_slice(&a.port().to_be_bytes());
                        cstr(&mut d, &a.ip().to_string());
                    }
                    None => d.push(b'U'),
                }
            }
            Command::Helo(name) => cstr(&mut d, name),
            Command::Mail(args) | Command::Rcpt(args) => {
                for a in args.iter() {
                    cstr(&mut d, a);
                }
            }
            Command::Header { name, value } => {
                cstr(&mut d, name);
                cstr(&mut d, value);
            }
            Command::Body(chunk) => d.extend_from_slice(chunk),
            Command::Data
            | Command::EndOfHeaders
            | Command::EndOfMessage
            | Command::Abort
            | Command::Quit => {}
        }
        let mut p = Vec::with_capacity(d.len() + 5);
        p.extend_from_slice(&((d.len() + 1) as u32).to_be_bytes());
        p.push(self.code());
        p.extend_from_slice(&d);
        p
    }
}

/// A reply packet from the milter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The milter's answer to option negotiation.
    OptNeg {
        version: u32,
        actions: u32,
        steps: u32,
    },
    Continue,
    /// No objection; do not call it again for this message (or connection).
    Accept,
    /// Accept and drop the message silently.
    Discard,
    Reject,
    Tempfail,
    /// A full reply: "550 5.7.1 text".
    ReplyCode(String),
    /// Still working: wait on.
    Progress,
    /// Send no more body chunks.
    Skip,
    /// A modification (only before the final reply to end of message).
    Modify(Modification),
}

/// A change asked for at the end of a message (SMFIR_*).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Modification {
    AddHeader {
        name: String,
        value: String,
    },
    /// Insert at `index` (0: the top).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Change the `index`th (from 1) field called `name`; an empty value
    /// deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    AddRecipient(String),
    DeleteRecipient(String),
    ChangeSender(String),
    ReplaceBody(Vec<u8>),
    Quarantine(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("packet length {0} out of range")]
    Length(usize),
    #[error("unknown reply code {0:?}")]
    Unknown(char),
    #[error("malformed {0:?} reply")]
    Malformed(char),
}

/// The length a packet header announces (the octets that follow it).
pub fn packet_len(header: [u8; 4]) -> Result<usize, DecodeError> {
    let n = u32::from_be_bytes(header) as usize;
    if n == 0 || n > MAX_PACKET {
        return Err(DecodeError::Length(n));
    }
    Ok(n)
}

/// NUL-terminated strings of `data` (the last one may lack its NUL).
fn strings(data: &[u8]) -> Vec<String> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decode one reply packet (its code octet and data).
pub fn decode(code: u8, data: &[u8]) -> Result<Response, DecodeError> {
    let bad = || DecodeError::Malformed(code as char);
    let two = |data: &[u8]| -> Result<(String, String), DecodeError> {
        let mut s = strings(data).into_iter();
        match (s.next(), s.next(), s.next()) {
            (Some(a), Some(b), None) if !a.is_empty() => Ok((a, b)),
            (Some(a), None, None) if !a.is_empty() => Ok((a, String::new())),
            _ => Err(bad()),
        }
    };
    let one = |data: &[u8]| -> Result<String, DecodeError> {
        strings(data).into_iter().next().ok_or_else(bad)
    };
    Ok(match code {
        b'O' => Response::OptNeg {
            version: u32_at(data, 0).ok_or_else(bad)?,
            actions: u32_at(data, 4).ok_or_else(bad)?,
            steps: u32_at(data, 8).ok_or_else(bad)?,
        },
        b'c' => Response::Continue,
        b'a' => Response::Accept,
        b'd' => Response::Discard,
        b'r' => Response::Reject,
        b't' => Response::Tempfail,
        b'p' => Response::Progress,
        b's' => Response::Skip,
        b'y' => Response::ReplyCode(one(data)?),
        b'h' => {
            let (name, value) = two(data)?;
            Response::Modify(Modification::AddHeader { name, value })
        }
        b'i' | b'm' => {
            let index = u32_at(data, 0).ok_or_else(bad)?;
            let (name, value) = two(&data[4..])?;
            Response::Modify(if code == b'i' {
                Modification::InsertHeader { index, name, value }
            } else {
                Modification::ChangeHeader { index, name, value }
            })
        }
        b'+' | b'2' => Response::Modify(Modification::AddRecipient(one(data)?)),
        b'-' => Response::Modify(Modification::DeleteRecipient(one(data)?)),
        b'e' => Response::Modify(Modification::ChangeSender(one(data)?)),
        b'b' => Response::Modify(Modification::ReplaceBody(data.to_vec())),
        b'q' => Response::Modify(Modification::Quarantine(one(data)?)),
        other => return Err(DecodeError::Unknown(other as char)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_libmilter_expects() {
        let c = Command::OptNeg {
            actions: 0x1ff,
            steps: 0x10,
        }
        .encode();
        assert_eq!(
            c,
            [0, 0, 0, 13, b'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0, 0, 0x10]
        );
        let addr = "192.0.2.1:2525".parse().ok();
        let c = Command::Connect {
            hostname: "client.example",
            addr,
        }
        .encode();
        let mut want = vec![0, 0, 0, 29, b'C'];
        want.extend_from_slice(b"client.example\0");
        want.extend_from_slice(&[b'4', 0x09, 0xdd]);
        want.extend_from_slice(b"192.0.2.1\0");
        assert_eq!(c, want);
        let pairs = [("j".to_string(), "mx".to_string())];
        assert_eq!(
            Command::Macro {
                for_cmd: b'C',
                pairs: &pairs
            }
            .encode(),
            [0, 0, 0, 7, b'D', b'C', b'j', 0, b'm', b'x', 0]
        );
        let args = ["<a@b>".to_string(), "SIZE=10".to_string()];
        assert_eq!(&Command::Mail(&args).encode()[4..], b"M<a@b>\0SIZE=10\0");
        assert_eq!(Command::EndOfMessage.encode(), [0, 0, 0, 1, b'E']);
        // A NUL cannot end a string early.
        assert_eq!(&Command::Helo("a\0b").encode()[4..], b"Hab\0");
    }

    #[test]
    fn replies_decode_and_bad_ones_are_errors() {
        assert_eq!(decode(b'c', b""), Ok(Response::Continue));
        assert_eq!(
            decode(b'y', b"550 5.7.1 go away\0"),
            Ok(Response::ReplyCode("550 5.7.1 go away".into()))
        );
        assert_eq!(
            decode(b'h', b"X-Spam\0yes\0"),
            Ok(Response::Modify(Modification::AddHeader {
                name: "X-Spam".into(),
                value: "yes".into()
            }))
        );
        assert_eq!(
            decode(b'm', b"\0\0\0\x02Subject\0\0"),
            Ok(Response::Modify(Modification::ChangeHeader {
                index: 2,
                name: "Subject".into(),
                value: String::new()
            }))
        );
        assert_eq!(
            decode(b'O', &[0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]),
            Ok(Response::OptNeg {
                version: 6,
                actions: 1,
                steps: 0
            })
        );
        assert_eq!(decode(b'O', &[0, 0]), Err(DecodeError::Malformed('O')));
        assert_eq!(decode(b'm', b"\0\0"), Err(DecodeError::Malformed('m')));
        assert_eq!(decode(b'h', b"\0x\0"), Err(DecodeError::Malformed('h')));
        assert_eq!(decode(b'Z', b""), Err(DecodeError::Unknown('Z')));
        assert_eq!(packet_len([0, 0, 0, 0]), Err(DecodeError::Length(0)));
        assert!(packet_len([0, 0x20, 0, 0]).is_err());
    }
}
