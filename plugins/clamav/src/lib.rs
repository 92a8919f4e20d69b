//! clamav: scans every message at DATA with the host's virus scanner
//! (ClamAV's clamd, configured in the host's `[av]` section; the plugin needs
//! capabilities = ["av-scan"]) and refuses what it finds with
//! `554 5.7.0 Virus found: <signature>`. When the scanner cannot answer,
//! `on_scan_error` decides: a temporary failure (the default: nothing
//! unscanned gets in) or accept. Messages larger than the scanner takes
//! follow `on_too_large`. Trusts the host's scanner; the signature name is
//! made printable before it goes into a reply.

use postern_sdk::prelude::*;

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnScanError {
    /// 451 4.7.0: try again later.
    #[default]
    Tempfail,
    /// Accept unscanned, and log.
    Accept,
}

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnTooLarge {
    /// Accept unscanned, and log (clamd's StreamMaxLength is usually
    /// smaller than what mail may carry).
    #[default]
    Accept,
    Tempfail,
    /// 552 5.3.4.
    Reject,
}

/// `[plugin.config]`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    on_scan_error: OnScanError,
    on_too_large: OnTooLarge,
    /// Add `X-Virus-Scanned: ClamAV (Postern)` to clean messages.
    add_header: Option<bool>,
}

struct ClamAv {
    on_scan_error: OnScanError,
    on_too_large: OnTooLarge,
    add_header: bool,
}

impl Plugin for ClamAv {
    type Config = Config;
    fn new(c: Config) -> Result<Self, String> {
        Ok(ClamAv {
            on_scan_error: c.on_scan_error,
            on_too_large: c.on_too_large,
            add_header: c.add_header.unwrap_or(true),
        })
    }
}

/// A signature name fit for a reply (printable ASCII, at most 200 octets).
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .take(200)
        .collect()
}

impl ClamAv {
    fn decide(&self, scan: Result<av_scan::ScanResult, av_scan::ScanError>) -> DataResult {
        use av_scan::{ScanError, ScanResult};
        match scan {
            Ok(ScanResult::Clean) => {
                let r = DataResult::from(pass());
                if self.add_header {
                    r.add_header("X-Virus-Scanned", "ClamAV (Postern)")
                } else {
                    r
                }
            }
            Ok(ScanResult::Infected(name)) => {
                let name = printable(&name);
                log::with(Level::Warn, "virus found", &[("signature", &name)]);
                reject(554, "5.7.0", format!("Virus found: {name}")).into()
            }
            Err(ScanError::TooLarge) => {
                log::with(Level::Info, "message too large to scan", &[]);
                match self.on_too_large {
                    OnTooLarge::Accept => pass().into(),
                    OnTooLarge::Tempfail => {
                        defer(451, "4.7.0", "Message too large to scan, try again later").into()
                    }
                    OnTooLarge::Reject => reject(552, "5.3.4", "Message too large to scan").into(),
                }
            }
            Err(ScanError::Denied) => {
                log::error(
                    "clamav needs the \"av-scan\" capability: add capabilities = [\"av-scan\"] to its [[plugin]] entry",
                );
                self.scan_failed("capability not granted")
            }
            Err(ScanError::Unavailable(why)) => self.scan_failed(&why),
        }
    }

    fn scan_failed(&self, why: &str) -> DataResult {
        log::with(
            Level::Warn,
            "virus scan failed",
            &[
                ("error", why),
                ("on_scan_error", &format!("{:?}", self.on_scan_error)),
            ],
        );
        match self.on_scan_error {
            OnScanError::Tempfail => {
                defer(451, "4.7.0", "Virus scan unavailable, try again later").into()
            }
            OnScanError::Accept => pass().into(),
        }
    }
}

impl Data for ClamAv {
    fn on_data(&self, _session: &Session, message: &Message) -> DataResult {
        self.decide(av_scan::scan_message(message))
    }
}

export_plugin!(ClamAv, [data], recycle);

#[cfg(test)]
mod tests {
    use super::*;
    use av_scan::{ScanError, ScanResult};
    use postern_sdk::testing;

    fn plugin(json: &str) -> ClamAv {
        ClamAv::new(postern_sdk::parse_config(json).unwrap()).unwrap()
    }

    fn summary(d: &DataResult) -> (&'static str, u16, String, String) {
        testing::summary(&d.verdict)
    }

    #[test]
    fn findings_errors_and_sizes() {
        let host = testing::host();
        let p = plugin("{}");
        let found = p.decide(Ok(ScanResult::Infected("Eicar-Signature\u{7}".into())));
        assert_eq!(
            summary(&found),
            (
                "reject",
                554,
                "5.7.0".into(),
                "Virus found: Eicar-Signature?".into()
            )
        );
        assert!(host.logged("virus found"));
        assert_eq!(summary(&p.decide(Ok(ScanResult::Clean))).0, "pass");
        let down = p.decide(Err(ScanError::Unavailable("refused".into())));
        assert_eq!(summary(&down).1, 451);
        assert_eq!(summary(&p.decide(Err(ScanError::TooLarge))).0, "pass");
        assert_eq!(summary(&p.decide(Err(ScanError::Denied))).1, 451);
        let lenient = plugin(r#"{"on_scan_error": "accept", "on_too_large": "reject"}"#);
        let down = lenient.decide(Err(ScanError::Unavailable("refused".into())));
        assert_eq!(summary(&down).0, "pass");
        assert_eq!(summary(&lenient.decide(Err(ScanError::TooLarge))).1, 552);
        assert!(postern_sdk::parse_config::<Config>(r#"{"on_scan_eror": "accept"}"#).is_err());
    }
}
