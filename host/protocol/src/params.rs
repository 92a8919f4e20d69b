//! ESMTP parameters of MAIL FROM and RCPT TO: generic `keyword[=value]` parsing and
//! typed interpretation of the parameters the server understands. Trusts no input:
//! keywords, values and numbers are validated, duplicates refused. Implements
//! RFC 5321 §4.1.2 (Mail-parameters / Rcpt-parameters), RFC 1870 (SIZE), RFC 6152
//! (8BITMIME BODY=), RFC 3030 (BODY=BINARYMIME), RFC 6531 (SMTPUTF8), RFC 3461 (RET,
//! ENVID, NOTIFY, ORCPT, kept raw) and RFC 4954 §5 (AUTH=).

/// One `keyword[=value]` parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EsmtpParam {
    /// The keyword, upper-cased.
    pub keyword: String,
    /// The value as written, if any.
    pub value: Option<String>,
}

/// The BODY= value (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    /// `7BIT`
    SevenBit,
    /// `8BITMIME`
    EightBitMime,
    /// `BINARYMIME`
    BinaryMime,
}

/// Interpreted MAIL FROM parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` declared message size.
    pub size: Option<u64>,
    /// `BODY=`
    pub body: Option<BodyType>,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
    /// `AUTH=` value, raw (xtext or `<>`).
    pub auth: Option<String>,
    /// `RET=` value, raw.
    pub ret: Option<String>,
    /// `ENVID=` value, raw (xtext).
    pub envid: Option<String>,
    /// `REQUIRETLS` (RFC 8689) was given.
    pub requiretls: bool,
    /// Parameters this library does not interpret (the session may refuse them with 555).
    pub other: Vec<EsmtpParam>,
    /// Every parameter in order, interpreted or not.
    pub all: Vec<EsmtpParam>,
}

/// Interpreted RCPT TO parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=` value, raw.
    pub notify: Option<String>,
    /// `ORCPT=` value, raw.
    pub orcpt: Option<String>,
    /// Parameters this library does not interpret.
    pub other: Vec<EsmtpParam>,
    /// Every parameter in order.
    pub all: Vec<EsmtpParam>,
}

/// Why parameters were refused. Messages never echo values (they may be hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Not `keyword[=value]` with the RFC 5321 character sets.
    #[error("{0}")]
    Syntax(String),
    /// The keyword appears twice.
    #[error("duplicate {0} parameter")]
    Duplicate(String),
    /// A known keyword with a missing, superfluous or invalid value.
    #[error("invalid {keyword} parameter value")]
    BadValue {
        /// The upper-cased keyword.
        keyword: String,
        /// The value as written ("" when it was missing).
        value: String,
    },
}

/// esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
fn is_keyword(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// esmtp-value = 1*(%d33-60 / %d62-126 / UTF8-non-ascii), C1 controls refused.
fn is_value(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| matches!(c, '!'..='<' | '>'..='~') || (!c.is_ascii() && !c.is_control()))
}

/// Parse a space-separated parameter list (extra spaces tolerated).
pub fn parse_params(s: &str) -> Result<Vec<EsmtpParam>, ParamError> {
    s.split(' ')
        .filter(|t| !t.is_empty())
        .map(|token| {
            let (keyword, value) = match token.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (token, None),
            };
            if !is_keyword(keyword) {
                return Err(ParamError::Syntax("malformed parameter keyword".into()));
            }
            let keyword = keyword.to_ascii_uppercase();
            if let Some(v) = value
                && !is_value(v)
            {
                return Err(ParamError::Syntax(format!(
                    "malformed {keyword} parameter value"
                )));
            }
            Ok(EsmtpParam {
                keyword,
                value: value.map(str::to_owned),
            })
        })
        .collect()
}

fn bad_value(p: &EsmtpParam) -> ParamError {
    ParamError::BadValue {
        keyword: p.keyword.clone(),
        value: p.value.clone().unwrap_or_default(),
    }
}

fn required_value(p: &EsmtpParam) -> Result<String, ParamError> {
    p.value.clone().ok_or_else(|| bad_value(p))
}

/// Refuse a keyword seen before (case-insensitively).
fn check_duplicate(seen: &[EsmtpParam], p: &EsmtpParam) -> Result<(), ParamError> {
    if seen
        .iter()
        .any(|q| q.keyword.eq_ignore_ascii_case(&p.keyword))
    {
        return Err(ParamError::Duplicate(p.keyword.to_ascii_uppercase()));
    }
    Ok(())
}

/// RFC 1870 size-value = 1*20DIGIT, and it must fit in u64.
fn parse_size(p: &EsmtpParam) -> Result<u64, ParamError> {
    let v = p.value.as_deref().unwrap_or_default();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_value(p));
    }
    v.parse().map_err(|_| bad_value(p))
}

/// RFC 3461 §4: `xtext` is printable ASCII other than `+` and `=`, with
/// `+XX` (upper-case hex) escapes for anything else.
pub fn is_xtext(text: &str) -> bool {
    let hex = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c));
    let mut bytes = text.bytes();
    while let Some(c) = bytes.next() {
        match c {
            b'+' => {
                if !hex(bytes.next()) || !hex(bytes.next()) {
                    return false;
                }
            }
            b'=' => return false,
            33..=126 => {}
            _ => return false,
        }
    }
    true
}

/// A DSN parameter's value checked (RFC 3461 §4): `RET=FULL|HDRS`,
/// `ENVID=xtext` (at most 100 characters), `NOTIFY=NEVER` or a list of
/// `SUCCESS`, `FAILURE`, `DELAY`, `ORCPT=addr-type;xtext` (at most 500).
fn dsn_value(p: &EsmtpParam) -> Result<String, ParamError> {
    let v = required_value(p)?;
    let ok = match p.keyword.to_ascii_uppercase().as_str() {
        "RET" => v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS"),
        "ENVID" => !v.is_empty() && v.len() <= 100 && is_xtext(&v),
        "NOTIFY" => {
            let words: Vec<String> = v.split(',').map(|w| w.to_ascii_uppercase()).collect();
            let known = |w: &String| matches!(w.as_str(), "SUCCESS" | "FAILURE" | "DELAY");
            let mut seen: Vec<&String> = Vec::new();
            let unique = words.iter().all(|w| {
                let fresh = !seen.contains(&w);
                seen.push(w);
                fresh
            });
            words == ["NEVER"] || (words.iter().all(known) && unique)
        }
        "ORCPT" => {
            v.len() <= 500
                && v.split_once(';').is_some_and(|(kind, addr)| {
                    !kind.is_empty()
                        && kind.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                        && !addr.is_empty()
                        && is_xtext(addr)
                })
        }
        _ => true,
    };
    if ok { Ok(v) } else { Err(bad_value(p)) }
}

fn parse_body(p: &EsmtpParam) -> Result<BodyType, ParamError> {
    let v = p.value.as_deref().unwrap_or_default();
    if v.eq_ignore_ascii_case("7BIT") {
        Ok(BodyType::SevenBit)
    } else if v.eq_ignore_ascii_case("8BITMIME") {
        Ok(BodyType::EightBitMime)
    } else if v.eq_ignore_ascii_case("BINARYMIME") {
        Ok(BodyType::BinaryMime)
    } else {
        Err(bad_value(p))
    }
}

/// A keyword-only parameter (`SMTPUTF8`, `REQUIRETLS`): given, and with no value.
fn flag(p: &EsmtpParam) -> Result<bool, ParamError> {
    match p.value {
        Some(_) => Err(bad_value(p)),
        None => Ok(true),
    }
}

/// Walk a command's parameters in order, refusing a repeated keyword.
/// `interpret` gets the upper-cased keyword and the parameter and says whether
/// it knew it. Returns every parameter, then those it did not know.
fn interpret_each(
    p: Vec<EsmtpParam>,
    mut interpret: impl FnMut(&str, &EsmtpParam) -> Result<bool, ParamError>,
) -> Result<(Vec<EsmtpParam>, Vec<EsmtpParam>), ParamError> {
    let mut all = Vec::new();
    let mut other = Vec::new();
    for param in p {
        check_duplicate(&all, &param)?;
        if !interpret(&param.keyword.to_ascii_uppercase(), &param)? {
            other.push(param.clone());
        }
        all.push(param);
    }
    Ok((all, other))
}

impl MailParams {
    /// Interpret MAIL FROM parameters.
    pub fn from_params(p: Vec<EsmtpParam>) -> Result<MailParams, ParamError> {
        let mut m = MailParams::default();
        (m.all, m.other) = interpret_each(p, |keyword, param| {
            match keyword {
                "SIZE" => m.size = Some(parse_size(param)?),
                "BODY" => m.body = Some(parse_body(param)?),
                "SMTPUTF8" => m.smtputf8 = flag(param)?,
                "REQUIRETLS" => m.requiretls = flag(param)?,
                "AUTH" => m.auth = Some(required_value(param)?),
                "RET" => m.ret = Some(dsn_value(param)?),
                "ENVID" => m.envid = Some(dsn_value(param)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(m)
    }
}

impl RcptParams {
    /// Interpret RCPT TO parameters.
    pub fn from_params(p: Vec<EsmtpParam>) -> Result<RcptParams, ParamError> {
        let mut r = RcptParams::default();
        (r.all, r.other) = interpret_each(p, |keyword, param| {
            match keyword {
                "NOTIFY" => r.notify = Some(dsn_value(param)?),
                "ORCPT" => r.orcpt = Some(dsn_value(param)?),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_values_are_checked() {
        let mail = |t: &str| parse_params(t).and_then(MailParams::from_params);
        let rcpt = |t: &str| parse_params(t).and_then(RcptParams::from_params);
        assert!(mail("RET=FULL ENVID=QQ314159").is_ok());
        assert!(mail("RET=hdrs ENVID=a+2Bb").is_ok());
        for bad in [
            "RET=ALL",
            "ENVID=a+2",
            "ENVID=a+zz",
            "ENVID=a=b",
            &format!("ENVID={}", "x".repeat(101)),
        ] {
            assert!(mail(bad).is_err(), "{bad}");
        }
        assert!(rcpt("NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;b+2Bc@y.test").is_ok());
        assert!(rcpt("NOTIFY=never").is_ok());
        for bad in [
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=SUCCESS,SUCCESS",
            "NOTIFY=SOMETIMES",
            "NOTIFY=",
            "ORCPT=b@y.test",
            "ORCPT=rfc 822;b@y.test",
            "ORCPT=rfc822;",
        ] {
            assert!(rcpt(bad).is_err(), "{bad}");
        }
        assert!(is_xtext("a+2B+3Db") && !is_xtext("a b") && !is_xtext("é"));
    }

    fn p(keyword: &str, value: Option<&str>) -> EsmtpParam {
        EsmtpParam {
            keyword: keyword.into(),
            value: value.map(Into::into),
        }
    }

    fn syntax(s: &str) -> ParamError {
        ParamError::Syntax(s.into())
    }

    #[test]
    fn parse_params_table() {
        let ok: Vec<(&str, Vec<EsmtpParam>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("SIZE=100", vec![p("SIZE", Some("100"))]),
            (
                "size=100 body=8bitmime",
                vec![p("SIZE", Some("100")), p("BODY", Some("8bitmime"))],
            ),
            (
                "  SMTPUTF8   SIZE=1  ",
                vec![p("SMTPUTF8", None), p("SIZE", Some("1"))],
            ),
            ("AUTH=<>", vec![p("AUTH", Some("<>"))]),
            (
                "ORCPT=rfc822;user+2Bx@example.com",
                vec![p("ORCPT", Some("rfc822;user+2Bx@example.com"))],
            ),
            ("X-FOO-1=bär", vec![p("X-FOO-1", Some("bär"))]),
            ("8BIT-X", vec![p("8BIT-X", None)]),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_params(input), Ok(expected), "{input:?}");
        }
        let bad = [
            ("=1", syntax("malformed parameter keyword")),
            ("-X=1", syntax("malformed parameter keyword")),
            ("X_Y=1", syntax("malformed parameter keyword")),
            ("SÏZE=1", syntax("malformed parameter keyword")),
            ("SIZE=", syntax("malformed SIZE parameter value")),
            ("SIZE=1=2", syntax("malformed SIZE parameter value")),
            ("X=a\u{85}b", syntax("malformed X parameter value")),
            ("X=a\u{7f}", syntax("malformed X parameter value")),
            ("X=a\tb", syntax("malformed X parameter value")),
        ];
        for (input, err) in bad {
            assert_eq!(parse_params(input), Err(err), "{input:?}");
        }
    }

    fn mail(s: &str) -> Result<MailParams, ParamError> {
        MailParams::from_params(parse_params(s)?)
    }

    fn bad(keyword: &str, value: &str) -> ParamError {
        ParamError::BadValue {
            keyword: keyword.into(),
            value: value.into(),
        }
    }

    #[test]
    fn mail_params_valid() {
        let m = mail("SIZE=12345 BODY=8bitmime SMTPUTF8 AUTH=<> RET=HDRS ENVID=QQ314159 X-X=1")
            .unwrap();
        assert_eq!(m.size, Some(12345));
        assert_eq!(m.body, Some(BodyType::EightBitMime));
        assert!(m.smtputf8);
        assert_eq!(m.auth.as_deref(), Some("<>"));
        assert_eq!(m.ret.as_deref(), Some("HDRS"));
        assert_eq!(m.envid.as_deref(), Some("QQ314159"));
        assert_eq!(m.other, vec![p("X-X", Some("1"))]);
        assert_eq!(m.all.len(), 7);
        assert_eq!(mail(""), Ok(MailParams::default()));
        assert_eq!(mail("BODY=7bit").unwrap().body, Some(BodyType::SevenBit));
        assert_eq!(
            mail("BODY=BinaryMIME").unwrap().body,
            Some(BodyType::BinaryMime)
        );
        assert_eq!(mail("SIZE=0").unwrap().size, Some(0));
        assert_eq!(
            mail("SIZE=18446744073709551615").unwrap().size,
            Some(u64::MAX)
        );
        assert_eq!(mail("SIZE=00000000000000000001").unwrap().size, Some(1));
    }

    #[test]
    fn mail_params_invalid() {
        let cases = [
            ("SIZE", bad("SIZE", "")),
            ("SIZE=abc", bad("SIZE", "abc")),
            ("SIZE=+1", bad("SIZE", "+1")),
            (
                "SIZE=18446744073709551616",
                bad("SIZE", "18446744073709551616"),
            ),
            (
                "SIZE=000000000000000000001",
                bad("SIZE", "000000000000000000001"),
            ),
            ("BODY=9BIT", bad("BODY", "9BIT")),
            ("BODY", bad("BODY", "")),
            ("SMTPUTF8=yes", bad("SMTPUTF8", "yes")),
            ("AUTH", bad("AUTH", "")),
            ("RET", bad("RET", "")),
            ("ENVID", bad("ENVID", "")),
            ("SIZE=1 size=2", ParamError::Duplicate("SIZE".into())),
            (
                "SMTPUTF8 SMTPUTF8",
                ParamError::Duplicate("SMTPUTF8".into()),
            ),
            ("X-A X-a=1", ParamError::Duplicate("X-A".into())),
        ];
        for (input, err) in cases {
            assert_eq!(mail(input), Err(err), "{input}");
        }
    }

    #[test]
    fn rcpt_params() {
        let r = RcptParams::from_params(
            parse_params("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b.example X=1").unwrap(),
        )
        .unwrap();
        assert_eq!(r.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;a@b.example"));
        assert_eq!(r.other, vec![p("X", Some("1"))]);
        assert_eq!(r.all.len(), 3);
        let rcpt = |s: &str| RcptParams::from_params(parse_params(s).unwrap());
        assert_eq!(rcpt("NOTIFY"), Err(bad("NOTIFY", "")));
        assert_eq!(rcpt("ORCPT"), Err(bad("ORCPT", "")));
        assert_eq!(
            rcpt("NOTIFY=NEVER notify=NEVER"),
            Err(ParamError::Duplicate("NOTIFY".into()))
        );
    }

    #[test]
    fn error_messages_do_not_echo_values() {
        assert_eq!(
            bad("SIZE", "<script>").to_string(),
            "invalid SIZE parameter value"
        );
        assert_eq!(
            ParamError::Duplicate("SIZE".into()).to_string(),
            "duplicate SIZE parameter"
        );
    }
}
