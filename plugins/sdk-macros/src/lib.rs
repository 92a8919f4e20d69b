//! `export_plugin!(Type, [stage, ...])`: generates the WIT bindings for a
//! plugin world that exports exactly the listed stages (plus `init`, and
//! `recycle` when asked for), and an
//! adapter that forwards each stage to the author's trait implementation.
//! Input: the macro invocation (trusted, compile time). Written against
//! `proc_macro` only, to keep plugin builds light.

use proc_macro::{TokenStream, TokenTree};

/// The contract version the glue is generated for.
#[cfg(not(feature = "contract-0-1"))]
const VERSION: &str = "0.2.0";
#[cfg(feature = "contract-0-1")]
const VERSION: &str = "0.1.0";
const V01: bool = cfg!(feature = "contract-0-1");

/// One stage: macro name, WIT interface, SDK trait, SDK method, and the
/// extra parameters after the session as (WIT parameters, arguments passed
/// to the SDK method).
struct StageDef {
    name: &'static str,
    iface: &'static str,
    tr: &'static str,
    method: &'static str,
    params: &'static str,
    args: &'static str,
}

const STAGES: &[StageDef] = &[
    StageDef {
        name: "connect",
        iface: "connect-hook",
        tr: "Connect",
        method: "on_connect",
        params: "",
        args: "",
    },
    StageDef {
        name: "helo",
        iface: "helo-hook",
        tr: "Helo",
        method: "on_helo",
        params: ", name: String, extended: bool",
        args: ", &name, extended",
    },
    StageDef {
        name: "auth",
        iface: "auth-hook",
        tr: "Auth",
        method: "on_auth",
        params: ", credentials: W::Credentials",
        args: ", &credentials",
    },
    StageDef {
        name: "mail_from",
        iface: "mail-from-hook",
        tr: "MailFrom",
        method: "on_mail_from",
        params: ", sender: W::EnvelopeAddress",
        args: ", &sender",
    },
    StageDef {
        name: "rcpt_to",
        iface: "rcpt-to-hook",
        tr: "RcptTo",
        method: "on_rcpt_to",
        params: ", recipient: W::EnvelopeAddress",
        args: ", &recipient",
    },
    StageDef {
        name: "data",
        iface: "data-hook",
        tr: "Data",
        method: "on_data",
        params: ", message: &::postern_sdk::Message",
        args: ", message",
    },
    StageDef {
        name: "vrfy",
        iface: "vrfy-hook",
        tr: "Vrfy",
        method: "on_vrfy",
        params: ", argument: String",
        args: ", &argument",
    },
    StageDef {
        name: "expn",
        iface: "expn-hook",
        tr: "Expn",
        method: "on_expn",
        params: ", argument: String",
        args: ", &argument",
    },
    StageDef {
        name: "outcome",
        iface: "outcome-hook",
        tr: "Observe",
        method: "on_outcomes",
        params: "",
        args: "",
    },
    // The delivery side (0.2 only): no session.
    StageDef {
        name: "route",
        iface: "route-hook",
        tr: "Router",
        method: "on_route",
        params: "message: D::QueuedMessage, recipient: String) -> D::Route",
        args: "&message, &recipient",
    },
    StageDef {
        name: "delivery_result",
        iface: "delivery-hook",
        tr: "DeliveryResult",
        method: "on_delivery_result",
        params: "message: D::QueuedMessage, attempt: D::Attempt) -> D::Decision",
        args: "&message, &attempt",
    },
    StageDef {
        name: "bounce",
        iface: "bounce-hook",
        tr: "BounceFilter",
        method: "on_bounce",
        params: "bounce: D::Bounce, report: &::postern_sdk::Message) -> W::Verdict",
        args: "&bounce, report",
    },
];

/// Stages of the delivery side: their `params` hold the whole signature.
const DELIVERY_STAGES: &[&str] = &["route", "delivery_result", "bounce"];

/// The guest trait impl of one stage for this contract version.
fn stage_impl(ty: &str, s: &StageDef) -> String {
    let module = s.iface.replace('-', "_");
    let (tr, method, params, args) = (s.tr, s.method, s.params, s.args);
    let (session_param, session) = if V01 {
        (
            "session: W::Session",
            "::postern_sdk::__glue::record(session)",
        )
    } else {
        (
            "session: &W::Session",
            "::postern_sdk::__glue::lend(session)",
        )
    };
    let body = match (s.name, V01) {
        (name, false) if DELIVERY_STAGES.contains(&name) => format!(
            "fn {method}({params} {{
                with_plugin(|p| <super::{ty} as ::postern_sdk::{tr}>::{method}(p, {args}))
            }}"
        ),
        ("outcome", false) => format!(
            "fn on_outcomes({session_param}, outcomes: Vec<W::Outcome>) {{
                let s = {session};
                let o: Vec<::postern_sdk::Outcome> = outcomes.into_iter().map(::postern_sdk::__glue::outcome).collect();
                with_plugin(|p| <super::{ty} as ::postern_sdk::Observe>::on_outcomes(p, &s, &o))
            }}"
        ),
        ("outcome", true) => format!(
            "fn on_outcome({session_param}, outcome: W::Outcome) {{
                let s = {session};
                let o = ::postern_sdk::__glue::outcome(&s, outcome);
                with_plugin(|p| <super::{ty} as ::postern_sdk::Observe>::on_outcomes(p, &s, ::std::slice::from_ref(&o)))
            }}"
        ),
        ("data", _) => format!(
            "fn {method}({session_param}{params}) -> W::DataResult {{
                let s = {session};
                ::postern_sdk::__glue::data_result(with_plugin(|p| <super::{ty} as ::postern_sdk::{tr}>::{method}(p, &s{args})))
            }}"
        ),
        _ => format!(
            "fn {method}({session_param}{params}) -> W::Verdict {{
                let s = {session};
                with_plugin(|p| <super::{ty} as ::postern_sdk::{tr}>::{method}(p, &s{args}))
            }}"
        ),
    };
    format!("impl exports::postern::policy::{module}::Guest for Adapter {{ {body} }}\n")
}

const IMPORTS: &[&str] = &[
    "types",
    "log",
    "clock",
    "dns",
    "kv",
    "message",
    "mail-auth",
    "av-scan",
    "delivery",
];

fn error(msg: &str) -> TokenStream {
    format!("::core::compile_error!({msg:?});").parse().unwrap()
}

/// Usage: `postern_sdk::export_plugin!(MyPlugin, [rcpt_to, data]);` or
/// `postern_sdk::export_plugin!(MyPlugin, [rcpt_to, data], recycle);`
///
/// The exports are generated only when compiling for wasm32, so the same
/// crate builds natively for unit tests of the plugin's logic.
///
/// `MyPlugin` implements `postern_sdk::Plugin` and the SDK trait of every
/// listed stage (`Connect`, `Helo`, `Auth`, `MailFrom`, `RcptTo`, `Data`,
/// `Vrfy`, `Expn`, `Observe` for `outcome`; on the delivery side, 0.2
/// only: `Router` for `route`, `DeliveryResult` for `delivery_result`,
/// `BounceFilter` for `bounce`). The trailing `recycle` opts in
/// to instance reuse: it exports `postern:policy/recycle`, answered by
/// `Plugin::recycle`, and is the author's promise that an instance keeps
/// nothing of one session that another could see. Without it every session
/// gets a fresh instance.
#[proc_macro]
pub fn export_plugin(input: TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = input.into_iter().collect();
    let mut ty = String::new();
    let mut i = 0;
    while i < tokens.len() {
        if let TokenTree::Punct(p) = &tokens[i]
            && p.as_char() == ','
        {
            break;
        }
        ty.push_str(&tokens[i].to_string());
        i += 1;
    }
    if ty.is_empty() {
        return error("export_plugin!: expected `export_plugin!(Type, [stage, ...])`");
    }
    let Some(TokenTree::Group(list)) = tokens.get(i + 1) else {
        return error("export_plugin!: expected a list of stages in brackets after the type");
    };
    let mut stages = Vec::new();
    for t in list.stream() {
        match t {
            TokenTree::Ident(id) => {
                let name = id.to_string();
                match STAGES.iter().find(|s| s.name == name) {
                    Some(_) if V01 && DELIVERY_STAGES.contains(&name.as_str()) => {
                        return error(&format!(
                            "export_plugin!: `{name}` is a postern:policy@0.2.0 stage; \
                             this build targets 0.1.0 (the contract-0-1 feature)"
                        ));
                    }
                    Some(s) => stages.push(s),
                    None => {
                        return error(&format!(
                            "export_plugin!: unknown stage `{name}` (known: connect, helo, auth, mail_from, rcpt_to, data, vrfy, expn, outcome, route, delivery_result, bounce)"
                        ));
                    }
                }
            }
            TokenTree::Punct(p) if p.as_char() == ',' => {}
            other => {
                return error(&format!(
                    "export_plugin!: unexpected `{other}` in the stage list"
                ));
            }
        }
    }
    if stages.is_empty() {
        return error("export_plugin!: list at least one stage");
    }
    let recycle = match &tokens[i + 2..] {
        [] => false,
        [TokenTree::Punct(p)] if p.as_char() == ',' => false,
        [TokenTree::Punct(p), TokenTree::Ident(id), rest @ ..]
            if p.as_char() == ','
                && id.to_string() == "recycle"
                && rest
                    .iter()
                    .all(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ',')) =>
        {
            true
        }
        _ => {
            return error(
                "export_plugin!: after the stage list only `recycle` may follow \
                 (`export_plugin!(Type, [stage, ...], recycle)`)",
            );
        }
    };
    let wit_dir = if V01 {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit/v0.1")
    } else {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit")
    };
    let mut world = format!(
        "package postern-plugin:generated; world plugin {{ include postern:policy/imports@{VERSION}; export postern:policy/init@{VERSION}; "
    );
    if recycle {
        world.push_str(&format!("export postern:policy/recycle@{VERSION}; "));
    }
    for s in &stages {
        world.push_str(&format!("export postern:policy/{}@{VERSION}; ", s.iface));
    }
    world.push('}');
    let with: String = IMPORTS
        .iter()
        // `av-scan` and `delivery` are 0.2 interfaces.
        .filter(|m| !(V01 && matches!(**m, "av-scan" | "delivery")))
        .map(|m| {
            let module = m.replace('-', "_");
            format!("\"postern:policy/{m}@{VERSION}\": ::postern_sdk::wit::{module},")
        })
        .collect();
    let mut impls = String::new();
    if recycle {
        impls.push_str(&format!(
            "impl exports::postern::policy::recycle::Guest for Adapter {{
                fn recycle() -> bool {{
                    PLUGIN.with(|cell| cell.get().is_some_and(<super::{ty} as ::postern_sdk::Plugin>::recycle))
                }}
            }}\n"
        ));
    }
    for s in &stages {
        impls.push_str(&stage_impl(&ty, s));
    }
    let delivery_use = if V01 {
        ""
    } else {
        "use ::postern_sdk::wit::delivery as D;"
    };
    let code = format!(
        r#"
#[doc(hidden)]
#[allow(clippy::all, unused)]
#[cfg(target_arch = "wasm32")]
mod __postern_plugin {{
    use ::postern_sdk::wit::types as W;
    {delivery_use}
    ::postern_sdk::__private::wit_bindgen::generate!({{
        inline: {world:?},
        path: {wit_dir:?},
        with: {{ {with} }},
        runtime_path: "::postern_sdk::__private::wit_bindgen::rt",
    }});

    ::std::thread_local! {{
        static PLUGIN: ::std::cell::OnceCell<super::{ty}> = const {{ ::std::cell::OnceCell::new() }};
    }}

    fn with_plugin<R>(f: impl FnOnce(&super::{ty}) -> R) -> R {{
        PLUGIN.with(|cell| {{
            let p = cell.get().expect("postern: a stage was called before init");
            f(p)
        }})
    }}

    pub struct Adapter;

    impl exports::postern::policy::init::Guest for Adapter {{
        fn init(config: String) -> Result<(), String> {{
            let config = ::postern_sdk::parse_config::<<super::{ty} as ::postern_sdk::Plugin>::Config>(&config)?;
            let plugin = <super::{ty} as ::postern_sdk::Plugin>::new(config)?;
            PLUGIN.with(|cell| cell.set(plugin).map_err(|_| String::from("init called twice")))
        }}
    }}

    {impls}

    export!(Adapter);
}}

/// Native builds (unit tests) have no exports; this keeps the plugin type
/// from looking unused there.
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
const _: fn(<{ty} as ::postern_sdk::Plugin>::Config) -> ::core::result::Result<{ty}, ::std::string::String> =
    <{ty} as ::postern_sdk::Plugin>::new;
"#
    );
    code.parse()
        .unwrap_or_else(|e| error(&format!("export_plugin!: internal error: {e}")))
}
