//! Table tests for command parsing and error replies (RFC 5321 §4.1, §4.2;
//! RFC 3207; RFC 4954; RFC 6531). Trusts nothing: inputs include control
//! characters, invalid UTF-8 and malformed paths.

use super::*;
use crate::address::{Domain, Mailbox};
use crate::params::{BodyType, EsmtpParam};

fn parse(s: &str) -> Result<Command, CommandError> {
    parse_command(s.as_bytes())
}

fn mailbox(s: &str) -> Mailbox {
    Mailbox::parse(s).unwrap()
}

fn mail_from(s: &str) -> Command {
    Command::MailFrom {
        path: ReversePath::Mailbox(mailbox(s)),
        params: MailParams::default(),
    }
}

fn rcpt_to(s: &str) -> Command {
    Command::RcptTo {
        path: ForwardPath::Mailbox(mailbox(s)),
        params: RcptParams::default(),
    }
}

fn syn(s: &str) -> CommandError {
    CommandError::Syntax(s.into())
}

#[test]
fn simple_commands_table() {
    let cases: Vec<(&str, Command)> = vec![
        ("HELO mx.example", Command::Helo("mx.example".into())),
        ("helo [192.0.2.1]", Command::Helo("[192.0.2.1]".into())),
        ("EHLO mx.example", Command::Ehlo("mx.example".into())),
        ("ehlo  mx.example  ", Command::Ehlo("mx.example".into())),
        (
            "EHLO bücher.example",
            Command::Ehlo("bücher.example".into()),
        ),
        ("EHLO not_strict!", Command::Ehlo("not_strict!".into())),
        ("DATA", Command::Data),
        ("data ", Command::Data),
        ("RSET", Command::Rset),
        ("QUIT", Command::Quit),
        ("Quit", Command::Quit),
        ("STARTTLS", Command::StartTls),
        ("starttls", Command::StartTls),
        ("NOOP", Command::Noop),
        ("NOOP anything at all", Command::Noop),
        ("HELP", Command::Help(None)),
        ("HELP MAIL", Command::Help(Some("MAIL".into()))),
        ("VRFY user", Command::Vrfy("user".into())),
        (
            "VRFY \"John Smith\"",
            Command::Vrfy("\"John Smith\"".into()),
        ),
        ("VRFY jöran", Command::Vrfy("jöran".into())),
        ("EXPN staff", Command::Expn("staff".into())),
        (" NOOP", Command::Noop),
        (
            "AUTH PLAIN",
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: None,
            },
        ),
        (
            "auth plain AGFsaWNlAHNlY3JldA==",
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some("AGFsaWNlAHNlY3JldA==".into()),
            },
        ),
        (
            "AUTH EXTERNAL =",
            Command::Auth {
                mechanism: "EXTERNAL".into(),
                initial_response: Some(String::new()),
            },
        ),
        (
            "AUTH SCRAM-SHA-256",
            Command::Auth {
                mechanism: "SCRAM-SHA-256".into(),
                initial_response: None,
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(line), Ok(expected), "{line:?}");
    }
}

#[test]
fn bdat_table() {
    for (line, size, last) in [
        ("BDAT 0 LAST", 0, true),
        ("bdat 100", 100, false),
        ("BDAT 0000000000000000042 last", 42, true),
        ("BDAT 18446744073709551615", u64::MAX, false),
    ] {
        assert_eq!(parse(line), Ok(Command::Bdat { size, last }), "{line}");
    }
}

#[test]
fn simple_command_errors_table() {
    let cases: Vec<(&[u8], CommandError)> = vec![
        (b"", CommandError::Unrecognized),
        (b"   ", CommandError::Unrecognized),
        (b"FOO", CommandError::Unrecognized),
        (b"MAILFROM:<a@b>", CommandError::Unrecognized),
        (b"XCLIENT ADDR=1.2.3.4", CommandError::Unrecognized),
        (b"TURN", CommandError::NotImplemented("TURN".into())),
        (
            b"etrn example.com",
            CommandError::NotImplemented("ETRN".into()),
        ),
        (b"BDAT", syn("Syntax: BDAT chunk-size [LAST]")),
        (b"BDAT 10 LAST x", syn("Syntax: BDAT chunk-size [LAST]")),
        (b"BDAT -1", syn("Syntax: BDAT chunk-size [LAST]")),
        (b"BDAT 1x", syn("Syntax: BDAT chunk-size [LAST]")),
        (b"BDAT 10 FIRST", syn("Syntax: BDAT chunk-size [LAST]")),
        (b"BDAT 10  LAST", syn("Syntax: BDAT chunk-size [LAST]")),
        (
            b"BDAT 123456789012345678901",
            syn("Syntax: BDAT chunk-size [LAST]"),
        ),
        (
            b"BDAT 99999999999999999999",
            syn("Syntax: BDAT chunk-size [LAST]"),
        ),
        (
            b"SEND FROM:<a@b>",
            CommandError::NotImplemented("SEND".into()),
        ),
        (b"SOML", CommandError::NotImplemented("SOML".into())),
        (b"SAML", CommandError::NotImplemented("SAML".into())),
        (b"ATRN", CommandError::NotImplemented("ATRN".into())),
        (b"HELO", syn("Syntax: HELO domain")),
        (b"EHLO", syn("Syntax: EHLO domain")),
        (b"EHLO a b", syn("Syntax: EHLO domain")),
        (b"DATA now", syn("Syntax: DATA (no arguments)")),
        (b"RSET x", syn("Syntax: RSET (no arguments)")),
        (b"QUIT x", syn("Syntax: QUIT (no arguments)")),
        (b"STARTTLS x", syn("Syntax: STARTTLS (no arguments)")),
        (b"VRFY", syn("Syntax: VRFY string")),
        (b"EXPN ", syn("Syntax: EXPN string")),
        (b"AUTH", syn("Syntax: AUTH mechanism [initial-response]")),
        (
            b"AUTH PLAIN a b",
            syn("Syntax: AUTH mechanism [initial-response]"),
        ),
        (b"AUTH PL@IN", syn("Invalid SASL mechanism name")),
        (
            b"AUTH ABCDEFGHIJKLMNOPQRSTU",
            syn("Invalid SASL mechanism name"),
        ),
        (b"NOOP\tx", CommandError::NonAscii),
        (b"QUIT\r", CommandError::NonAscii),
        (b"QU\0IT", CommandError::NonAscii),
        (b"QUIT\x7f", CommandError::NonAscii),
        (b"HELO \xff", CommandError::NonAscii),
        (b"EHLO caf\xc3", CommandError::NonAscii),
        (b"Q\xc3\xbcIT", CommandError::NonAscii),
        ("NOOP ü".as_bytes(), CommandError::NonAscii),
        ("HELP ü".as_bytes(), CommandError::NonAscii),
        ("AUTH PLAIN ü".as_bytes(), CommandError::NonAscii),
        ("EHLO a\u{85}b".as_bytes(), CommandError::NonAscii),
        ("VRFY a\u{9f}".as_bytes(), CommandError::NonAscii),
    ];
    for (line, err) in cases {
        let got = parse_command(line);
        assert_eq!(got, Err(err), "{:?}", String::from_utf8_lossy(line));
    }
}

#[test]
fn mail_from_table() {
    let sized = MailParams {
        size: Some(1000),
        body: Some(BodyType::EightBitMime),
        all: vec![
            EsmtpParam {
                keyword: "SIZE".into(),
                value: Some("1000".into()),
            },
            EsmtpParam {
                keyword: "BODY".into(),
                value: Some("8BITMIME".into()),
            },
        ],
        ..MailParams::default()
    };
    let cases: Vec<(&str, Command)> = vec![
        ("MAIL FROM:<a@b.example>", mail_from("a@b.example")),
        ("mail from:<a@b.example>", mail_from("a@b.example")),
        ("MAIL FROM: <a@b.example>", mail_from("a@b.example")),
        ("MAIL  FROM:   <a@b.example>  ", mail_from("a@b.example")),
        (
            "MAIL FROM:<>",
            Command::MailFrom {
                path: ReversePath::Null,
                params: MailParams::default(),
            },
        ),
        (
            "MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME",
            Command::MailFrom {
                path: ReversePath::Mailbox(mailbox("a@b.example")),
                params: sized,
            },
        ),
        (
            "MAIL FROM:<\"a> b\"@x.example>",
            mail_from("\"a> b\"@x.example"),
        ),
        (
            "MAIL FROM:<\"a\\\"> b\"@x.example>",
            mail_from("\"a\\\"> b\"@x.example"),
        ),
        ("MAIL FROM:<u@[tag:a>b]>", mail_from("u@[tag:a>b]")),
        (
            "MAIL FROM:<@r.example:u@x.example>",
            mail_from("u@x.example"),
        ),
        ("MAIL FROM:<用户@例子.广告>", mail_from("用户@例子.广告")),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(line), Ok(expected), "{line:?}");
    }
    let utf8 = parse("MAIL FROM:<ü@x.example> SMTPUTF8").unwrap();
    let Command::MailFrom { params, .. } = utf8 else {
        panic!()
    };
    assert!(params.smtputf8);
}

#[test]
fn mail_from_errors_table() {
    use AddressError::*;
    let sender = CommandError::SenderAddress;
    let cases: Vec<(&str, CommandError)> = vec![
        ("MAIL", syn("Syntax: MAIL FROM:<address>")),
        ("MAIL TO:<a@b>", syn("Syntax: MAIL FROM:<address>")),
        ("MAIL FROM", syn("Syntax: MAIL FROM:<address>")),
        ("MAIL FROM :<a@b>", syn("Syntax: MAIL FROM:<address>")),
        ("MAIL FROM:", syn("Syntax: MAIL FROM:<address>")),
        ("MAIL FROM:a@b.example", sender(MissingAngleBrackets)),
        ("MAIL FROM:<a@b.example", sender(MissingAngleBrackets)),
        ("MAIL FROM:<\"a>@b.example>", sender(MissingAngleBrackets)),
        (
            "MAIL FROM:<a@b.example>SIZE=1",
            syn("Syntax: a space must follow the address"),
        ),
        ("MAIL FROM:<a..b@x>", sender(BadLocalPart)),
        ("MAIL FROM:<user@>", sender(BadDomain)),
        ("MAIL FROM:<user@-bad-.com>", sender(BadDomain)),
        (
            "MAIL FROM:<a@b> SIZE=x",
            CommandError::Params(ParamError::BadValue {
                keyword: "SIZE".into(),
                value: "x".into(),
            }),
        ),
        (
            "MAIL FROM:<a@b> SIZE=1 SIZE=2",
            CommandError::Params(ParamError::Duplicate("SIZE".into())),
        ),
        (
            "MAIL FROM:<a@b> =x",
            CommandError::Params(ParamError::Syntax("malformed parameter keyword".into())),
        ),
    ];
    for (line, err) in cases {
        assert_eq!(parse(line), Err(err), "{line:?}");
    }
}

#[test]
fn rcpt_to_table() {
    let cases: Vec<(&str, Command)> = vec![
        ("RCPT TO:<a@b.example>", rcpt_to("a@b.example")),
        ("rcpt to: <a@b.example>", rcpt_to("a@b.example")),
        (
            "RCPT TO:<user%other.example@local.example>",
            rcpt_to("user%other.example@local.example"),
        ),
        (
            "RCPT TO:<\"user@other.example\"@local.example>",
            rcpt_to("\"user@other.example\"@local.example"),
        ),
        (
            "RCPT TO:<@a.example,@b.example:user@c.example>",
            rcpt_to("user@c.example"),
        ),
        (
            "RCPT TO:<u@[IPv6:2001:db8::1]>",
            rcpt_to("u@[IPv6:2001:db8::1]"),
        ),
        (
            "RCPT TO:<Postmaster>",
            Command::RcptTo {
                path: ForwardPath::Postmaster,
                params: RcptParams::default(),
            },
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(parse(line), Ok(expected), "{line:?}");
    }
    let Ok(Command::RcptTo { params, .. }) =
        parse("RCPT TO:<a@b> NOTIFY=SUCCESS ORCPT=rfc822;a@b X-Y")
    else {
        panic!()
    };
    assert_eq!(params.notify.as_deref(), Some("SUCCESS"));
    assert_eq!(params.orcpt.as_deref(), Some("rfc822;a@b"));
    assert_eq!(params.other.len(), 1);
}

#[test]
fn rcpt_to_errors_table() {
    use AddressError::*;
    let rcpt = CommandError::Address;
    let cases: Vec<(&str, CommandError)> = vec![
        ("RCPT", syn("Syntax: RCPT TO:<address>")),
        ("RCPT FROM:<a@b>", syn("Syntax: RCPT TO:<address>")),
        ("RCPT TO:a@b", rcpt(MissingAngleBrackets)),
        ("RCPT TO:<a@b", rcpt(MissingAngleBrackets)),
        ("RCPT TO:<>", rcpt(Empty)),
        ("RCPT TO:<@x>", rcpt(BadSourceRoute)),
        (
            "RCPT TO:<a@b> NOTIFY",
            CommandError::Params(ParamError::BadValue {
                keyword: "NOTIFY".into(),
                value: String::new(),
            }),
        ),
    ];
    for (line, err) in cases {
        assert_eq!(parse(line), Err(err), "{line:?}");
    }
}

#[test]
fn replies_table() {
    let cases: Vec<(CommandError, &str)> = vec![
        (
            CommandError::Unrecognized,
            "500 5.5.1 Command unrecognized\r\n",
        ),
        (
            CommandError::NotImplemented("TURN".into()),
            "502 5.5.1 TURN command not implemented\r\n",
        ),
        (
            syn("Syntax: HELO domain"),
            "501 5.5.4 Syntax: HELO domain\r\n",
        ),
        (
            CommandError::Address(AddressError::BadDomain),
            "501 5.1.3 Bad recipient address syntax: bad domain\r\n",
        ),
        (
            CommandError::SenderAddress(AddressError::BadLocalPart),
            "501 5.1.7 Bad sender address syntax: bad local part\r\n",
        ),
        (
            CommandError::Params(ParamError::Duplicate("SIZE".into())),
            "501 5.5.4 Bad parameters: duplicate SIZE parameter\r\n",
        ),
        (
            CommandError::NonAscii,
            "500 5.5.2 Invalid characters in command\r\n",
        ),
    ];
    for (err, wire) in cases {
        assert_eq!(String::from_utf8(err.reply().to_bytes()).unwrap(), wire);
    }
    assert_eq!(
        CommandError::SenderAddress(AddressError::Empty).address_error(),
        Some(&AddressError::Empty)
    );
    assert_eq!(CommandError::NonAscii.address_error(), None);
}

#[test]
fn mailbox_display_reparses() {
    for line in [
        "MAIL FROM:<\"a\\\\b c\"@[192.0.2.1]>",
        "RCPT TO:<x@[IPv6:::ffff:192.0.2.1]>",
        "RCPT TO:<x@Example.COM.>",
    ] {
        let mb = match parse(line).unwrap() {
            Command::MailFrom { path, .. } => path.mailbox().cloned(),
            Command::RcptTo { path, .. } => path.mailbox().cloned(),
            _ => None,
        }
        .unwrap();
        assert_eq!(Mailbox::parse(&mb.to_string()), Ok(mb.clone()));
        assert!(matches!(
            mb.domain,
            Domain::Ipv4(_) | Domain::Ipv6(_) | Domain::Name(_)
        ));
    }
}
