//! `postern:policy/dns`: look-ups through the host's resolver, only for
//! plugins granted the "dns" capability. Names are checked for length before
//! they reach the resolver. Every look-up is capped by the deadline of the
//! plugin call making it (minus a margin for the plugin to answer), so a slow
//! or silent name server costs the plugin a `temporary("timeout")` it can
//! handle, never its whole call.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Refused;
use crate::capability::{DnsAnswer, DnsFailure, DnsQuery};
use crate::state::PluginState;

impl PluginState {
    async fn dns(&mut self, query: DnsQuery) -> Result<DnsAnswer, Refused<DnsFailure>> {
        if !self.meta.grants.dns {
            self.log_denied("dns look-up", "dns");
            return Err(Refused::Denied);
        }
        if let DnsQuery::A(n) | DnsQuery::Aaaa(n) | DnsQuery::Mx(n) | DnsQuery::Txt(n) = &query
            && (n.is_empty() || n.len() > 253 + 1)
        {
            return Err(Refused::Failed(DnsFailure::Invalid(format!(
                "bad name length {}",
                n.len()
            ))));
        }
        let budget = lookup_budget(self.deadline.saturating_duration_since(Instant::now()));
        let answer = if budget.is_zero() {
            None
        } else {
            tokio::time::timeout(budget, self.services.dns.lookup(query))
                .await
                .ok()
        };
        answer
            .map(|r| r.map_err(Refused::Failed))
            .unwrap_or_else(|| {
                tracing::info!(
                    target: "postern::plugin",
                    plugin = %self.meta.name,
                    session = %self.session_id,
                    budget_ms = budget.as_millis() as u64,
                    "dns look-up abandoned: the plugin call's deadline is near"
                );
                Err(Refused::Failed(DnsFailure::Temporary("timeout".into())))
            })
    }
}

/// Of the time left before the call's deadline, the share a look-up may use
/// is all but a margin (a tenth of it, at least [`MIN_MARGIN`]) in which the
/// plugin gets the `temporary("timeout")` and answers.
pub(super) fn lookup_budget(remaining: Duration) -> Duration {
    remaining.saturating_sub((remaining / 10).max(MIN_MARGIN))
}

/// The least time left to a plugin after a look-up it made gave up.
const MIN_MARGIN: Duration = Duration::from_millis(100);

fn addrs(a: DnsAnswer) -> Vec<String> {
    match a {
        DnsAnswer::Addrs(v) => v.iter().map(IpAddr::to_string).collect(),
        _ => Vec::new(),
    }
}

/// The `dns` interface of one contract version (the same functions in both).
macro_rules! dns_host {
    ($v:ident) => {
        const _: () = {
            use crate::bindings::$v::postern::policy::dns::{DnsError, Host, Mx};

            type Answer<T> = wasmtime::Result<Result<T, DnsError>>;

            fn to_wit(f: Refused<DnsFailure>) -> DnsError {
                match f {
                    Refused::Denied => DnsError::Denied,
                    Refused::Failed(DnsFailure::NxDomain) => DnsError::NxDomain,
                    Refused::Failed(DnsFailure::NoRecords) => DnsError::NoRecords,
                    Refused::Failed(DnsFailure::Temporary(m)) => DnsError::Temporary(m),
                    Refused::Failed(DnsFailure::Invalid(m)) => DnsError::Invalid(m),
                }
            }

            /// Ask `query` and turn the answer into the contract's with `pick`.
            async fn ask<T>(
                state: &mut PluginState,
                query: DnsQuery,
                pick: impl FnOnce(DnsAnswer) -> T,
            ) -> Answer<T> {
                Ok(state.dns(query).await.map(pick).map_err(to_wit))
            }

            impl Host for PluginState {
                async fn lookup_a(&mut self, name: String) -> Answer<Vec<String>> {
                    ask(self, DnsQuery::A(name), addrs).await
                }

                async fn lookup_aaaa(&mut self, name: String) -> Answer<Vec<String>> {
                    ask(self, DnsQuery::Aaaa(name), addrs).await
                }

                async fn lookup_mx(&mut self, name: String) -> Answer<Vec<Mx>> {
                    ask(self, DnsQuery::Mx(name), |a| match a {
                        DnsAnswer::Mx(v) => v
                            .into_iter()
                            .map(|(preference, exchange)| Mx {
                                preference,
                                exchange,
                            })
                            .collect(),
                        _ => Vec::new(),
                    })
                    .await
                }

                async fn lookup_txt(&mut self, name: String) -> Answer<Vec<String>> {
                    ask(self, DnsQuery::Txt(name), |a| match a {
                        DnsAnswer::Txt(v) => v,
                        _ => Vec::new(),
                    })
                    .await
                }

                async fn lookup_ptr(&mut self, ip: String) -> Answer<Vec<String>> {
                    let Ok(addr) = ip.trim().parse::<IpAddr>() else {
                        return Ok(Err(DnsError::Invalid(format!(
                            "{ip:?} is not an IP address"
                        ))));
                    };
                    ask(self, DnsQuery::Ptr(addr), |a| match a {
                        DnsAnswer::Names(v) => v,
                        _ => Vec::new(),
                    })
                    .await
                }
            }
        };
    };
}

dns_host!(v01);
dns_host!(v02);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_the_plugin_time_to_answer() {
        let ms = Duration::from_millis;
        assert_eq!(lookup_budget(ms(2000)), ms(1800));
        assert_eq!(lookup_budget(ms(500)), ms(400));
        assert_eq!(lookup_budget(ms(150)), ms(50));
        assert_eq!(lookup_budget(ms(100)), Duration::ZERO);
        assert_eq!(lookup_budget(Duration::ZERO), Duration::ZERO);
    }
}
