//! Table tests for address parsing (RFC 5321 §4.1.2, §4.1.3, §4.5.3.1; RFC 6531).
//! Trusts nothing: inputs include relay tricks, over-long parts and malformed literals.

use super::*;
use AddressError::*;

fn mb(local: &str, domain: Domain) -> Mailbox {
    Mailbox {
        local_part: local.into(),
        domain,
    }
}

fn name(s: &str) -> Domain {
    Domain::Name(s.into())
}

#[test]
fn mailbox_valid_table() {
    let cases = [
        ("user@example.com", mb("user", name("example.com"))),
        (
            "first.last@sub.example.org",
            mb("first.last", name("sub.example.org")),
        ),
        ("user+tag@example.com", mb("user+tag", name("example.com"))),
        (
            "user%other.example@local.example",
            mb("user%other.example", name("local.example")),
        ),
        ("a!b@example.com", mb("a!b", name("example.com"))),
        (
            "!#$%&'*+-/=?^_`{|}~@x",
            mb("!#$%&'*+-/=?^_`{|}~", name("x")),
        ),
        (
            "\"user@other.example\"@local.example",
            mb("\"user@other.example\"", name("local.example")),
        ),
        (
            "\"john doe\"@example.com",
            mb("\"john doe\"", name("example.com")),
        ),
        (
            "\"a\\\"b\\\\c\"@x.example",
            mb("\"a\\\"b\\\\c\"", name("x.example")),
        ),
        ("\"\"@example.com", mb("\"\"", name("example.com"))),
        ("\"a>b\"@example.com", mb("\"a>b\"", name("example.com"))),
        ("user@example.com.", mb("user", name("example.com."))),
        ("user@EXAMPLE.com", mb("user", name("EXAMPLE.com"))),
        ("user@localhost", mb("user", name("localhost"))),
        ("user@1.2.3.4", mb("user", name("1.2.3.4"))),
        ("user@a-b.c0m", mb("user", name("a-b.c0m"))),
        (
            "user@[192.0.2.1]",
            mb("user", Domain::Ipv4("192.0.2.1".parse().unwrap())),
        ),
        (
            "user@[IPv6:2001:db8::1]",
            mb("user", Domain::Ipv6("2001:db8::1".parse().unwrap())),
        ),
        (
            "user@[ipv6:::1]",
            mb("user", Domain::Ipv6("::1".parse().unwrap())),
        ),
        (
            "user@[IPv6:::ffff:192.0.2.1]",
            mb("user", Domain::Ipv6("::ffff:192.0.2.1".parse().unwrap())),
        ),
        (
            "user@[x-tag:some=content]",
            mb(
                "user",
                Domain::General {
                    tag: "x-tag".into(),
                    content: "some=content".into(),
                },
            ),
        ),
        ("用户@例子.广告", mb("用户", name("例子.广告"))),
        ("jöran@bücher.example", mb("jöran", name("bücher.example"))),
        ("\"ü x\"@example.com", mb("\"ü x\"", name("example.com"))),
    ];
    for (input, expected) in cases {
        let got = Mailbox::parse(input);
        assert_eq!(got.as_ref(), Ok(&expected), "{input}");
        let again = Mailbox::parse(&expected.to_string());
        assert_eq!(again, Ok(expected), "display roundtrip of {input}");
    }
}

#[test]
fn mailbox_invalid_table() {
    let long_local = format!("{}@x.example", "a".repeat(65));
    let long_label = format!("u@{}.example", "a".repeat(64));
    let long_domain = format!("u@{}", ["abcdefghi"; 26].join("."));
    let cases: Vec<(&str, AddressError)> = vec![
        ("", Empty),
        ("user", MissingAt),
        ("user@", BadDomain),
        ("@x", BadLocalPart),
        ("a..b@x", BadLocalPart),
        (".a@x", BadLocalPart),
        ("a.@x", BadLocalPart),
        ("a b@x", BadLocalPart),
        ("a(b)@x", BadLocalPart),
        ("a<b@x", BadLocalPart),
        ("a\\b@x", BadLocalPart),
        ("\"unterminated@x", BadLocalPart),
        ("\"a\"b@x", BadLocalPart),
        ("\"a\\\u{7}\"@x", BadLocalPart),
        ("\"a\u{1}\"@x", BadLocalPart),
        ("\"a\\\"@x", BadLocalPart),
        ("a\u{85}b@x", BadLocalPart),
        ("user@-bad-.com", BadDomain),
        ("user@bad-.com", BadDomain),
        ("user@-bad.com", BadDomain),
        ("user@a..b", BadDomain),
        ("user@.a", BadDomain),
        ("user@.", BadDomain),
        ("user@a..", BadDomain),
        ("user@a_b.com", BadDomain),
        ("user@a b", BadDomain),
        ("user@x@y", BadDomain),
        ("user@exa\u{85}mple", BadDomain),
        ("user@[192.0.2.1", BadAddressLiteral),
        ("user@[192.0.2.256]", BadAddressLiteral),
        ("user@[192.0.2]", BadAddressLiteral),
        ("user@[010.0.0.1]", BadAddressLiteral),
        ("user@[ 192.0.2.1]", BadAddressLiteral),
        ("user@[IPv6:2001:db8::g]", BadAddressLiteral),
        ("user@[IPv6:fe80::1%eth0]", BadAddressLiteral),
        ("user@[IPv6:1.2.3.4]", BadAddressLiteral),
        ("user@[]", BadAddressLiteral),
        ("user@[tag:]", BadAddressLiteral),
        ("user@[-tag:x]", BadAddressLiteral),
        ("user@[tag:a[b]", BadAddressLiteral),
        ("user@[tag:a b]", BadAddressLiteral),
        (&long_local, LocalPartTooLong),
        (&long_label, LabelTooLong),
        (&long_domain, DomainTooLong),
    ];
    for (input, err) in cases {
        assert_eq!(Mailbox::parse(input), Err(err), "{input:?}");
    }
}

#[test]
fn limits_are_inclusive() {
    let local = "a".repeat(MAX_LOCAL_PART);
    assert!(Mailbox::parse(&format!("{local}@x")).is_ok());
    let label = "b".repeat(MAX_LABEL);
    assert!(Domain::parse(&label).is_ok());
    // 4 labels of 63 + 3 dots = 255 octets
    let domain = [label.as_str(); 4].join(".");
    assert_eq!(domain.len(), MAX_DOMAIN);
    assert!(Domain::parse(&domain).is_ok());
    assert_eq!(Domain::parse(&format!("{domain}.")), Err(DomainTooLong));
}

#[test]
fn quoted_helpers() {
    let m = Mailbox::parse("\"a\\\"b\\\\c d\"@x").unwrap();
    assert!(m.is_quoted());
    assert_eq!(m.local_part_unquoted(), "a\"b\\c d");
    let m = Mailbox::parse("\"user@other.example\"@local.example").unwrap();
    assert_eq!(m.local_part_unquoted(), "user@other.example");
    let m = Mailbox::parse("plain@x").unwrap();
    assert!(!m.is_quoted());
    assert_eq!(m.local_part_unquoted(), "plain");
}

#[test]
fn ascii_detection() {
    assert!(Mailbox::parse("a@b.example").unwrap().is_ascii());
    assert!(!Mailbox::parse("ü@b.example").unwrap().is_ascii());
    assert!(!Mailbox::parse("a@bü.example").unwrap().is_ascii());
    assert!(Mailbox::parse("a@[IPv6:::1]").unwrap().is_ascii());
}

#[test]
fn domain_helpers() {
    let d = Domain::parse("MX.Example.COM.").unwrap();
    assert_eq!(d.as_name(), Some("MX.Example.COM."));
    assert_eq!(d.normalized(), "mx.example.com");
    assert!(!d.is_literal());
    assert_eq!(
        Domain::parse("BÜCHER.example").unwrap().normalized(),
        "bücher.example"
    );
    let lit = Domain::parse("[IPv6:2001:DB8:0::1]").unwrap();
    assert!(lit.is_literal());
    assert_eq!(lit.as_name(), None);
    assert_eq!(lit.to_string(), "[IPv6:2001:db8::1]");
    assert_eq!(lit.normalized(), "[IPv6:2001:db8::1]");
    assert_eq!(
        Domain::parse("[192.0.2.1]").unwrap().to_string(),
        "[192.0.2.1]"
    );
}

#[test]
fn reverse_path_table() {
    let ok = [
        ("<>", ReversePath::Null),
        (
            "<a@b.example>",
            ReversePath::Mailbox(mb("a", name("b.example"))),
        ),
        (
            "<@a.example,@b.example:user@c.example>",
            ReversePath::Mailbox(mb("user", name("c.example"))),
        ),
        (
            "<@a.example:user@c.example>",
            ReversePath::Mailbox(mb("user", name("c.example"))),
        ),
        (
            "<@[192.0.2.1],@[IPv6:::1]:u@c>",
            ReversePath::Mailbox(mb("u", name("c"))),
        ),
        (
            "<\"a>b\"@c>",
            ReversePath::Mailbox(mb("\"a>b\"", name("c"))),
        ),
    ];
    for (input, expected) in ok {
        assert_eq!(ReversePath::parse(input), Ok(expected), "{input}");
    }
    let long = format!("<{}@{}>", "a".repeat(64), vec!["b".repeat(63); 3].join("."));
    assert!(long.len() > MAX_PATH);
    let bad: Vec<(&str, AddressError)> = vec![
        ("", Empty),
        ("a@b", MissingAngleBrackets),
        ("<a@b", MissingAngleBrackets),
        ("a@b>", MissingAngleBrackets),
        ("<", MissingAngleBrackets),
        ("<Postmaster>", MissingAt),
        ("<@a.example user@c>", BadSourceRoute),
        ("<@a.example,user@c>", BadSourceRoute),
        ("<@:user@c>", BadSourceRoute),
        ("<@a..b:user@c>", BadSourceRoute),
        ("<@[1.2.3.4:user@c>", BadSourceRoute),
        ("<@[1.2.3.4]x:user@c>", BadSourceRoute),
        ("<@a,:user@c>", BadSourceRoute),
        ("<@a:>", Empty),
        ("< a@b>", BadLocalPart),
        ("<a@b >", BadDomain),
        (&long, PathTooLong),
    ];
    for (input, err) in bad {
        assert_eq!(ReversePath::parse(input), Err(err), "{input:?}");
    }
}

#[test]
fn forward_path_table() {
    let ok = [
        ("<Postmaster>", ForwardPath::Postmaster),
        ("<postMASTER>", ForwardPath::Postmaster),
        (
            "<postmaster@example.com>",
            ForwardPath::Mailbox(mb("postmaster", name("example.com"))),
        ),
        (
            "<@relay.example:u@dest.example>",
            ForwardPath::Mailbox(mb("u", name("dest.example"))),
        ),
    ];
    for (input, expected) in ok {
        assert_eq!(ForwardPath::parse(input).as_ref(), Ok(&expected), "{input}");
        assert_eq!(ForwardPath::parse(&expected.to_string()), Ok(expected));
    }
    assert_eq!(ForwardPath::parse("<>"), Err(Empty));
    assert_eq!(ForwardPath::parse("Postmaster"), Err(MissingAngleBrackets));
    assert_eq!(ForwardPath::parse("<Postmaster >"), Err(BadLocalPart));
}

#[test]
fn path_display() {
    assert_eq!(ReversePath::Null.to_string(), "<>");
    let p = ReversePath::parse("<@x:a@[192.0.2.1]>").unwrap();
    assert_eq!(p.to_string(), "<a@[192.0.2.1]>");
    assert_eq!(p.mailbox().map(|m| m.local_part.as_str()), Some("a"));
    assert_eq!(ForwardPath::Postmaster.mailbox(), None);
}
