//! The Rust template: a cdylib crate on postern-sdk, its tests on the
//! SDK's fake host (`postern_sdk::testing`).

use std::fmt::Write as _;
use std::path::Path;

use super::{ByStage, Plan, relative};

/// The SDK trait, method and arguments of each stage, and how a test calls
/// it (`None`: no native test, the data stage needs a message the host
/// holds).
fn stage(
    s: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
) {
    match s {
        "connect" => (
            "Connect",
            "on_connect",
            "_session: &Session",
            Some("on_connect(&s)"),
        ),
        "helo" => (
            "Helo",
            "on_helo",
            "_session: &Session, _name: &str, _extended: bool",
            Some("on_helo(&s, \"client.example\", true)"),
        ),
        "auth" => (
            "Auth",
            "on_auth",
            "_session: &Session, _credentials: &Credentials",
            Some(
                "on_auth(&s, &Credentials { mechanism: \"PLAIN\".into(), authzid: None, username: \"u\".into(), password: \"p\".into() })",
            ),
        ),
        "rcpt-to" => (
            "RcptTo",
            "on_rcpt_to",
            "_session: &Session, _recipient: &EnvelopeAddress",
            Some("on_rcpt_to(&s, &testing::address(\"someone@example.org\").build())"),
        ),
        "data" => (
            "Data",
            "on_data",
            "_session: &Session, _message: &Message",
            None,
        ),
        "vrfy" => (
            "Vrfy",
            "on_vrfy",
            "_session: &Session, _argument: &str",
            Some("on_vrfy(&s, \"someone\")"),
        ),
        "expn" => (
            "Expn",
            "on_expn",
            "_session: &Session, _argument: &str",
            Some("on_expn(&s, \"list\")"),
        ),
        "outcome" => (
            "Observe",
            "on_outcomes",
            "_session: &Session, _outcomes: &[Outcome]",
            Some("on_outcomes(&s, &[])"),
        ),
        other => unreachable!("stage {other} has its own template"),
    }
}

const EXAMPLE: &str = r#"
/// `[plugin.config]`, as JSON. Unknown keys are refused, so a typo fails
/// `postern check`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Sender domains refused at MAIL FROM.
    blocked_domains: Vec<String>,
    /// Messages one sender may start per hour; 0: no limit. Counted in the
    /// host's kv store: needs capabilities = ["kv"].
    max_per_sender_per_hour: i64,
    /// Refuse a sender whose domain does not exist in the DNS. Needs
    /// capabilities = ["dns"].
    check_sender_domain: bool,
}

const HOUR_MS: u64 = 3_600_000;

/// The plugin: its validated configuration, nothing of a session (so its
/// instances can be reused: `recycle` below).
struct {{Camel}} {
    blocked_domains: Vec<String>,
    max_per_sender_per_hour: i64,
    check_sender_domain: bool,
}

impl Plugin for {{Camel}} {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        let mut blocked_domains = Vec::new();
        for d in config.blocked_domains {
            if d.is_empty() || d.contains('@') {
                return Err(format!("blocked_domains: {d:?} is not a domain"));
            }
            blocked_domains.push(d.trim_end_matches('.').to_ascii_lowercase());
        }
        if config.max_per_sender_per_hour < 0 {
            return Err("max_per_sender_per_hour: 0 (no limit) or more".into());
        }
        Ok({{Camel}} {
            blocked_domains,
            max_per_sender_per_hour: config.max_per_sender_per_hour,
            check_sender_domain: config.check_sender_domain,
        })
    }
}

impl MailFrom for {{Camel}} {
    fn on_mail_from(&self, _session: &Session, sender: &EnvelopeAddress) -> Verdict {
        // Empty for the null sender <> (bounces), which always passes.
        let domain = sender.domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() {
            return pass();
        }
        if self.blocked_domains.contains(&domain) {
            log::with(Level::Info, "sender refused", &[("sender", &sender.address)]);
            return reject(550, "5.7.1", "Sender domain refused by {{name}}");
        }
        if self.max_per_sender_per_hour > 0 {
            let key = format!("sender:{}", sender.address.to_ascii_lowercase());
            match kv::increment(&key, 1, HOUR_MS) {
                Ok(n) if n > self.max_per_sender_per_hour => {
                    return defer(451, "4.7.1", "Too many messages from this sender, try later");
                }
                Ok(_) => {}
                // The store is down or the grant is missing: fail safe.
                Err(e) => {
                    log::with(Level::Warn, "kv failed", &[("error", &format!("{e:?}"))]);
                    return defer(451, "4.3.0", "Temporary policy failure, try later");
                }
            }
        }
        if self.check_sender_domain {
            match domain_exists(&domain) {
                Ok(true) => {}
                Ok(false) => return reject(550, "5.1.8", "Sender domain does not exist"),
                Err(e) => {
                    log::with(Level::Warn, "dns failed", &[("error", &format!("{e:?}"))]);
                    return defer(451, "4.4.3", "Sender domain look-up failed, try later");
                }
            }
        }
        pass()
    }
}

/// Whether the DNS knows `domain` as a mail domain: an MX, or else an A.
fn domain_exists(domain: &str) -> Result<bool, DnsError> {
    match dns::lookup_mx(domain) {
        Ok(_) => Ok(true),
        Err(DnsError::NxDomain) => Ok(false),
        Err(DnsError::NoRecords) => match dns::lookup_a(domain) {
            Ok(_) => Ok(true),
            Err(DnsError::NxDomain | DnsError::NoRecords) => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}
"#;

const PLAIN: &str = r#"
/// `[plugin.config]`, as JSON. Add your settings here; unknown keys are
/// refused, so a typo fails `postern check`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {}

/// The plugin: its validated configuration, nothing of a session (so its
/// instances can be reused: `recycle` below).
struct {{Camel}} {}

impl Plugin for {{Camel}} {
    type Config = Config;
    fn new(_config: Config) -> Result<Self, String> {
        Ok({{Camel}} {})
    }
}
"#;

const EXAMPLE_TESTS: &str = r##"
    fn plugin(json: &str) -> {{Camel}} {
        {{Camel}}::new(postern_sdk::parse_config(json).unwrap()).unwrap()
    }

    fn mail_from(p: &{{Camel}}, sender: &str) -> (&'static str, u16, String, String) {
        let s = testing::session().build();
        testing::summary(&p.on_mail_from(&s, &testing::address(sender).build()))
    }

    #[test]
    fn configuration_is_checked() {
        assert!(postern_sdk::parse_config::<Config>(r#"{"blocked_domain": []}"#).is_err());
        let bad = postern_sdk::parse_config(r#"{"blocked_domains": ["a@b"]}"#).unwrap();
        assert!({{Camel}}::new(bad).is_err());
    }

    #[test]
    fn blocked_domains_are_refused_and_logged() {
        let host = testing::host();
        let p = plugin(r#"{"blocked_domains": ["Spam.Example"]}"#);
        assert_eq!(mail_from(&p, "x@spam.example").1, 550);
        assert!(host.logged("sender refused"));
        assert_eq!(mail_from(&p, "x@ham.example").0, "pass");
        assert_eq!(mail_from(&p, "").0, "pass");
    }

    #[test]
    fn senders_are_counted_in_kv_per_hour() {
        let host = testing::host();
        let p = plugin(r#"{"max_per_sender_per_hour": 2}"#);
        assert_eq!(mail_from(&p, "a@b.example").0, "pass");
        assert_eq!(mail_from(&p, "A@b.example").0, "pass");
        assert_eq!(mail_from(&p, "a@b.example").2, "4.7.1");
        assert_eq!(host.kv_value("sender:a@b.example").as_deref(), Some("3"));
        host.advance_ms(HOUR_MS);
        assert_eq!(mail_from(&p, "a@b.example").0, "pass");
        host.fail_kv(Some(KvError::Unavailable("down".into())));
        assert_eq!(mail_from(&p, "a@b.example").2, "4.3.0");
    }

    #[test]
    fn sender_domains_are_looked_up_in_dns() {
        let host = testing::host();
        host.dns_mx("mx.example", &[(10, "mail.mx.example")]);
        host.dns_a("a-only.example", &["192.0.2.1"]);
        let p = plugin(r#"{"check_sender_domain": true}"#);
        assert_eq!(mail_from(&p, "x@mx.example").0, "pass");
        assert_eq!(mail_from(&p, "x@a-only.example").0, "pass");
        assert_eq!(mail_from(&p, "x@nowhere.example").2, "5.1.8");
        host.fail_dns(Some(DnsError::Temporary("timeout".into())));
        assert_eq!(mail_from(&p, "x@mx.example").1, 451);
    }
"##;

/// The return type of each stage's stub method.
const STUB_RETURN_TYPE: ByStage = ByStage {
    data: " -> DataResult",
    outcome: "",
    verdict: " -> Verdict",
};

/// The body of each stage's stub method.
const STUB_BODY: ByStage = ByStage {
    data: "pass().into()",
    outcome: "",
    verdict: "pass()",
};

pub fn files(plan: &Plan, sdk: &Path) -> Result<Vec<(String, String)>, String> {
    let in_workspace = plan.checkout.is_some();
    // Relative inside the checkout (it moves with it), absolute outside.
    let sdk_path = if in_workspace {
        relative(&plan.dir, sdk)
    } else {
        sdk.to_path_buf()
    };
    let serde = if in_workspace {
        "serde = { workspace = true }"
    } else {
        "serde = { version = \"1\", features = [\"derive\"] }"
    };
    let workspace = if in_workspace {
        ""
    } else {
        "\n# A crate of its own, not a member of a surrounding workspace.\n[workspace]\n"
    };
    let cargo = format!(
        "[package]\nname = \"{name}\"\ndescription = \"A Postern policy plugin\"\n\
         version = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         # A component is a cdylib; \"rlib\" lets `cargo test` run the unit tests natively.\n\
         [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\n\
         postern-sdk = {{ path = \"{sdk}\" }}\n{serde}\n{workspace}",
        name = plan.name,
        sdk = sdk_path.display(),
    );

    let mut src = format!(
        "//! {name}: a Postern policy plugin (stages: {stages}), made by\n\
         //! `postern plugin new`. Build: `cargo build --release --target\n\
         //! wasm32-wasip2`; test: `cargo test`. See README.md.\n\
         //! Input: the session and arguments from the host; the operator's\n\
         //! configuration.\n\nuse postern_sdk::prelude::*;\n",
        name = plan.name,
        stages = plan.stages.join(", "),
    );
    src.push_str(plan.pick(EXAMPLE, PLAIN));
    let mut tests = String::from(plan.pick(EXAMPLE_TESTS, ""));
    for s in plan.stub_stages() {
        let (trait_, method, args, call) = stage(s);
        let ret = STUB_RETURN_TYPE.get(s);
        let body = STUB_BODY.get(s);
        let _ = write!(
            src,
            "\nimpl {trait_} for {{{{Camel}}}} {{\n    // Your policy for {s}: `pass()` leaves the decision to the next plugin.\n    \
             fn {method}(&self, {args}){ret} {{\n        {body}\n    }}\n}}\n"
        );
        if let Some(call) = call {
            let check = if *s == "outcome" {
                format!("        p.{call};\n")
            } else {
                format!("        assert_eq!(testing::summary(&p.{call}).0, \"pass\");\n")
            };
            let _ = write!(
                tests,
                "\n    #[test]\n    fn {snake}_passes() {{\n        \
                 let p = {{{{Camel}}}}::new(Default::default()).unwrap();\n        \
                 let s = testing::session().build();\n{check}    }}\n",
                snake = Plan::snake(s),
            );
        }
    }
    let exports: Vec<String> = plan.stages.iter().map(|s| Plan::snake(s)).collect();
    let _ = write!(
        src,
        "\n// The component's exports: `init`, these stages and `recycle` (the host\n\
         // reuses an instance for later sessions; it keeps nothing of a session).\n\
         export_plugin!({{{{Camel}}}}, [{}], recycle);\n",
        exports.join(", ")
    );
    if !tests.is_empty() {
        let _ = write!(
            src,
            "\n/// Native tests: host calls (log, kv, dns, clock) reach the SDK's fake host.\n\
             #[cfg(test)]\nmod tests {{\n    use super::*;\n    use postern_sdk::testing;\n{tests}}}\n"
        );
    }
    let src = src
        .replace("{{Camel}}", &plan.camel())
        .replace("{{name}}", &plan.name);

    let wasm = if in_workspace {
        format!(
            "{}/target/wasm32-wasip2/release/{}.wasm",
            relative(&plan.dir, plan.checkout.as_deref().unwrap_or(&plan.dir)).display(),
            Plan::snake(&plan.name)
        )
    } else {
        format!(
            "target/wasm32-wasip2/release/{}.wasm",
            Plan::snake(&plan.name)
        )
    };
    let readme = plan.readme(
        super::Lang::Rust,
        "rustup target add wasm32-wasip2\ncargo build --release --target wasm32-wasip2",
        "cargo test",
        &wasm,
    );
    Ok(vec![
        ("Cargo.toml".into(), cargo),
        ("src/lib.rs".into(), src),
        ("README.md".into(), readme),
        (".gitignore".into(), "/target\n".into()),
    ])
}

/// Inside a Postern checkout: add the crate to the workspace members, so
/// `make build` and `make test` (which build and test every member) pick
/// it up.
pub fn join_workspace(plan: &Plan) -> Result<(), String> {
    let Some(root) = &plan.checkout else {
        return Ok(());
    };
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let member = relative(root, &plan.dir).display().to_string();
    let Some(start) = text.find("members = [") else {
        return Err(format!(
            "{}: no `members = [` to add {member} to",
            path.display()
        ));
    };
    let Some(end) = text[start..].find(']').map(|i| start + i) else {
        return Err(format!("{}: unterminated members list", path.display()));
    };
    if text[start..end].contains(&format!("\"{member}\"")) {
        return Ok(());
    }
    let mut new = text[..end].to_string();
    let _ = writeln!(new, "    \"{member}\",");
    new.push_str(&text[end..]);
    std::fs::write(&path, new).map_err(|e| format!("{}: {e}", path.display()))
}
