//! Pure decisions on the host's results: the SPF action at MAIL FROM, the
//! DMARC action at DATA (RFC 7489 §6.6.4 policy, §6.3 `pct`, operator
//! overrides) and the `Authentication-Results` field value (RFC 8601 §2.2).
//! Input: results computed by the host from untrusted mail; every text that
//! reaches a header or a reply is sanitised.

use postern_sdk::wit::mail_auth::{AuthOutcome, AuthResult, DmarcPolicy, SpfOutcome};
use postern_sdk::{Verdict, defer, pass, reject};

use crate::config::{DmarcConfig, Override, QuarantineAction, SpfAction, SpfConfig};

pub fn name(r: AuthResult) -> &'static str {
    match r {
        AuthResult::None => "none",
        AuthResult::Pass => "pass",
        AuthResult::Fail => "fail",
        AuthResult::Softfail => "softfail",
        AuthResult::Neutral => "neutral",
        AuthResult::Temperror => "temperror",
        AuthResult::Permerror => "permerror",
    }
}

/// Printable ASCII without quotes or backslashes, at most `max` bytes: safe
/// in a quoted RFC 8601 `reason` and in an SMTP reply text.
pub fn clean(text: &str, max: usize) -> String {
    let mut s: String = text
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => ' ',
        })
        .collect();
    s.truncate(max);
    s.trim().to_string()
}

/// RFC 7208 §8 with the configured action: fail → 550 5.7.23, temperror →
/// 451 4.7.24 (RFC 7372 codes), `tag` → pass (shown at DATA).
pub fn spf_verdict(cfg: &SpfConfig, spf: &SpfOutcome) -> Verdict {
    let check = &spf.mail_from;
    let action = match check.result {
        AuthResult::Fail => cfg.fail,
        AuthResult::Softfail => cfg.softfail,
        AuthResult::Temperror => cfg.temperror,
        AuthResult::Permerror => cfg.permerror,
        _ => return pass(),
    };
    let why = match (&check.explanation, check.result) {
        (Some(e), AuthResult::Fail) => format!(": {}", clean(e, 200)),
        _ => String::new(),
    };
    let domain = clean(&check.domain, 120);
    match (action, check.result) {
        (SpfAction::Tag, _) => pass(),
        (SpfAction::Reject, r) => {
            reject(550, "5.7.23", format!("SPF {} for {domain}{why}", name(r)))
        }
        (SpfAction::Defer, r) => defer(
            451,
            "4.7.24",
            format!("SPF {} for {domain}, try again later", name(r)),
        ),
    }
}

/// What DMARC asks of this message.
#[derive(Debug)]
pub enum DmarcAction {
    Accept,
    /// Accept with the quarantine header.
    Tag,
    /// Accept with the quarantine header, held in the queue.
    Hold,
    Refuse(Verdict),
}

/// RFC 7489 §6.6.4: a failing message meets the domain's policy (`p`, or
/// `sp` for a subdomain, already chosen by the host), unless an operator
/// override says otherwise; `pct` samples it (§6.6.4: messages outside the
/// sample get the next lower policy). `sample` is 0..100.
pub fn dmarc_action(cfg: &DmarcConfig, outcome: &AuthOutcome, sample: u8) -> DmarcAction {
    let d = &outcome.dmarc;
    if !cfg.enforce || d.result != AuthResult::Fail {
        return DmarcAction::Accept;
    }
    let domain = d.from_domain.to_ascii_lowercase();
    let mut policy = match cfg.overrides.get(&domain) {
        Some(Override::None) => return DmarcAction::Accept,
        Some(Override::Quarantine) => DmarcPolicy::Quarantine,
        Some(Override::Reject) => DmarcPolicy::Reject,
        None => d.policy,
    };
    if !cfg.overrides.contains_key(&domain) && sample >= d.pct {
        policy = match policy {
            DmarcPolicy::Reject => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        };
    }
    let domain = clean(&d.from_domain, 120);
    match policy {
        DmarcPolicy::Reject => DmarcAction::Refuse(reject(
            550,
            "5.7.1",
            format!("Rejected by the DMARC policy of {domain}"),
        )),
        DmarcPolicy::Quarantine => match cfg.quarantine {
            QuarantineAction::Tag => DmarcAction::Tag,
            QuarantineAction::Hold => DmarcAction::Hold,
            QuarantineAction::Defer => DmarcAction::Refuse(defer(
                451,
                "4.7.1",
                format!("Held by the DMARC policy of {domain}, try again later"),
            )),
            QuarantineAction::Reject => DmarcAction::Refuse(reject(
                550,
                "5.7.1",
                format!("Rejected by the DMARC policy of {domain}"),
            )),
        },
        _ => DmarcAction::Accept,
    }
}

/// The value of the `Authentication-Results` field (RFC 8601 §2.2), at most
/// 998 bytes: later DKIM signatures are left out if it would grow longer.
pub fn authentication_results(
    authserv_id: &str,
    outcome: &AuthOutcome,
    mail_from: &str,
    helo: &str,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    let spf = &outcome.spf;
    if mail_from.is_empty() {
        parts.push(format!(
            "spf={} smtp.helo={}",
            name(spf.helo.result),
            clean(helo, 200).replace(' ', "")
        ));
    } else {
        parts.push(format!(
            "spf={} smtp.mailfrom={}",
            name(spf.mail_from.result),
            clean(mail_from, 300).replace(' ', "")
        ));
    }
    let arc = &outcome.arc;
    let mut arc_part = format!("arc={}", name(arc.result));
    if arc.instances > 0 {
        arc_part.push_str(&format!(" (i={})", arc.instances));
    }
    let dmarc = &outcome.dmarc;
    let mut dmarc_part = format!("dmarc={}", name(dmarc.result));
    if dmarc.record_found {
        dmarc_part.push_str(&format!(" (p={})", policy_name(dmarc.policy)));
    }
    if !dmarc.from_domain.is_empty() {
        dmarc_part.push_str(&format!(" header.from={}", clean(&dmarc.from_domain, 200)));
    }
    let fixed = authserv_id.len() + parts[0].len() + arc_part.len() + dmarc_part.len() + 16;
    let mut dkim_parts = Vec::new();
    let mut room = 998usize.saturating_sub(fixed + "Authentication-Results: ".len());
    if outcome.dkim.is_empty() {
        dkim_parts.push("dkim=none".to_string());
    }
    for sig in &outcome.dkim {
        let mut p = format!("dkim={}", name(sig.result));
        if let Some(e) = &sig.error {
            p.push_str(&format!(" reason=\"{}\"", clean(e, 80)));
        }
        if !sig.domain.is_empty() {
            p.push_str(&format!(
                " header.d={} header.s={} header.a={}",
                clean(&sig.domain, 100).replace(' ', ""),
                clean(&sig.selector, 60).replace(' ', ""),
                clean(&sig.algorithm, 20).replace(' ', "")
            ));
        }
        if p.len() + 2 > room {
            break;
        }
        room -= p.len() + 2;
        dkim_parts.push(p);
    }
    parts.extend(dkim_parts);
    parts.push(arc_part);
    parts.push(dmarc_part);
    format!(
        "{}; {}",
        clean(authserv_id, 200).replace(' ', ""),
        parts.join("; ")
    )
}

fn policy_name(p: DmarcPolicy) -> &'static str {
    match p {
        DmarcPolicy::None => "none",
        DmarcPolicy::Quarantine => "quarantine",
        DmarcPolicy::Reject => "reject",
        DmarcPolicy::Unspecified => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_sdk::wit::mail_auth::{ArcOutcome, DkimSignature, DmarcOutcome, SpfCheck};

    fn check(result: AuthResult) -> SpfCheck {
        SpfCheck {
            result,
            domain: "d.test".into(),
            explanation: Some("not \"ours\"".into()),
        }
    }

    fn outcome(dmarc: AuthResult, policy: DmarcPolicy, pct: u8) -> AuthOutcome {
        AuthOutcome {
            spf: SpfOutcome {
                helo: check(AuthResult::None),
                mail_from: check(AuthResult::Pass),
            },
            dkim: vec![DkimSignature {
                domain: "d.test".into(),
                selector: "s".into(),
                algorithm: "rsa-sha256".into(),
                result: AuthResult::Fail,
                error: Some("body hash".into()),
            }],
            arc: ArcOutcome {
                result: AuthResult::None,
                instances: 0,
                error: None,
            },
            dmarc: DmarcOutcome {
                from_domain: "D.test".into(),
                result: dmarc,
                spf_aligned: false,
                dkim_aligned: false,
                record_found: true,
                policy,
                published_p: policy,
                published_sp: policy,
                pct,
            },
        }
    }

    fn code(v: &Verdict) -> u16 {
        match v {
            Verdict::Reject(r) | Verdict::Defer(r) => r.code,
            _ => 0,
        }
    }

    #[test]
    fn spf_actions() {
        let cfg = SpfConfig::default();
        for (result, want) in [
            (AuthResult::Pass, 0),
            (AuthResult::Fail, 550),
            (AuthResult::Softfail, 0),
            (AuthResult::Temperror, 451),
            (AuthResult::Permerror, 0),
            (AuthResult::None, 0),
        ] {
            let spf = SpfOutcome {
                helo: check(AuthResult::None),
                mail_from: check(result),
            };
            assert_eq!(code(&spf_verdict(&cfg, &spf)), want, "{result:?}");
        }
    }

    #[test]
    fn dmarc_policy_pct_and_overrides() {
        let mut cfg = DmarcConfig::default();
        let act = |cfg: &DmarcConfig, r, p, pct, sample| match dmarc_action(
            cfg,
            &outcome(r, p, pct),
            sample,
        ) {
            DmarcAction::Accept => "accept",
            DmarcAction::Tag => "tag",
            DmarcAction::Hold => "hold",
            DmarcAction::Refuse(v) if code(&v) == 550 => "reject",
            DmarcAction::Refuse(_) => "defer",
        };
        use {AuthResult as A, DmarcPolicy as P};
        assert_eq!(act(&cfg, A::Pass, P::Reject, 100, 0), "accept");
        assert_eq!(act(&cfg, A::Fail, P::Reject, 100, 99), "reject");
        assert_eq!(act(&cfg, A::Fail, P::Reject, 50, 49), "reject");
        assert_eq!(act(&cfg, A::Fail, P::Reject, 50, 50), "tag");
        assert_eq!(act(&cfg, A::Fail, P::Quarantine, 100, 0), "tag");
        assert_eq!(act(&cfg, A::Fail, P::Quarantine, 0, 0), "accept");
        assert_eq!(act(&cfg, A::Fail, P::None, 100, 0), "accept");
        assert_eq!(act(&cfg, A::Temperror, P::Reject, 100, 0), "accept");
        cfg.quarantine = QuarantineAction::Defer;
        assert_eq!(act(&cfg, A::Fail, P::Quarantine, 100, 0), "defer");
        cfg.quarantine = QuarantineAction::Hold;
        assert_eq!(act(&cfg, A::Fail, P::Quarantine, 100, 0), "hold");
        assert_eq!(act(&cfg, A::Fail, P::Reject, 50, 50), "hold"); // sampled out
        assert_eq!(act(&cfg, A::Fail, P::Quarantine, 0, 0), "accept");
        cfg.overrides.insert("d.test".into(), Override::None);
        assert_eq!(act(&cfg, A::Fail, P::Reject, 100, 0), "accept");
        cfg.overrides.insert("d.test".into(), Override::Reject);
        assert_eq!(act(&cfg, A::Fail, P::None, 0, 99), "reject");
        cfg.enforce = false;
        assert_eq!(act(&cfg, A::Fail, P::Reject, 100, 0), "accept");
    }

    #[test]
    fn authentication_results_field() {
        let o = outcome(AuthResult::Fail, DmarcPolicy::Reject, 100);
        assert_eq!(
            authentication_results("mx.test", &o, "a@d.test", "h.test"),
            "mx.test; spf=pass smtp.mailfrom=a@d.test; dkim=fail reason=\"body hash\" \
             header.d=d.test header.s=s header.a=rsa-sha256; arc=none; \
             dmarc=fail (p=reject) header.from=D.test"
        );
        let mut many = o.clone();
        many.dkim = vec![o.dkim[0].clone(); 40];
        let v = authentication_results("mx.test", &many, "", "h.test");
        assert!(
            v.len() + "Authentication-Results: ".len() <= 998,
            "{}",
            v.len()
        );
        assert!(v.starts_with("mx.test; spf=none smtp.helo=h.test; dkim=fail"));
        assert!(v.ends_with("header.from=D.test"));
    }
}
