//! `export_plugin!(Type, [stage, ...])`: generates the WIT bindings for a
//! plugin world that exports exactly the listed stages (plus `init`, and
//! `recycle` when asked for), and an
//! adapter that forwards each stage to the author's trait implementation.
//! Input: the macro invocation (trusted, compile time). Written against
//! `proc_macro` only, to keep plugin builds light.

use proc_macro::{TokenStream, TokenTree};

/// (macro stage name, WIT interface, SDK trait, method, parameters, call arguments, return type)
const STAGES: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
    (
        "connect",
        "connect-hook",
        "Connect",
        "on_connect",
        "session: Session",
        "&session",
        "Verdict",
    ),
    (
        "helo",
        "helo-hook",
        "Helo",
        "on_helo",
        "session: Session, name: String, extended: bool",
        "&session, &name, extended",
        "Verdict",
    ),
    (
        "auth",
        "auth-hook",
        "Auth",
        "on_auth",
        "session: Session, credentials: Credentials",
        "&session, &credentials",
        "Verdict",
    ),
    (
        "mail_from",
        "mail-from-hook",
        "MailFrom",
        "on_mail_from",
        "session: Session, sender: EnvelopeAddress",
        "&session, &sender",
        "Verdict",
    ),
    (
        "rcpt_to",
        "rcpt-to-hook",
        "RcptTo",
        "on_rcpt_to",
        "session: Session, recipient: EnvelopeAddress",
        "&session, &recipient",
        "Verdict",
    ),
    (
        "data",
        "data-hook",
        "Data",
        "on_data",
        "session: Session, message: &Message",
        "&session, message",
        "DataResult",
    ),
    (
        "vrfy",
        "vrfy-hook",
        "Vrfy",
        "on_vrfy",
        "session: Session, argument: String",
        "&session, &argument",
        "Verdict",
    ),
    (
        "expn",
        "expn-hook",
        "Expn",
        "on_expn",
        "session: Session, argument: String",
        "&session, &argument",
        "Verdict",
    ),
    (
        "outcome",
        "outcome-hook",
        "Observe",
        "on_outcome",
        "session: Session, outcome: Outcome",
        "&session, &outcome",
        "()",
    ),
];

const IMPORTS: &[&str] = &["types", "log", "clock", "dns", "kv", "message", "mail-auth"];

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
/// `Vrfy`, `Expn`, `Observe` for `outcome`). The trailing `recycle` opts in
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
                match STAGES.iter().find(|s| s.0 == name) {
                    Some(s) => stages.push(*s),
                    None => {
                        return error(&format!(
                            "export_plugin!: unknown stage `{name}` (known: connect, helo, auth, mail_from, rcpt_to, data, vrfy, expn, outcome)"
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
    let wit_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit/v0.1");
    let mut world = String::from(
        "package postern-plugin:generated; world plugin { include postern:policy/imports@0.1.0; export postern:policy/init@0.1.0; ",
    );
    if recycle {
        world.push_str("export postern:policy/recycle@0.1.0; ");
    }
    for s in &stages {
        world.push_str(&format!("export postern:policy/{}@0.1.0; ", s.1));
    }
    world.push('}');
    let with: String = IMPORTS
        .iter()
        .map(|m| {
            let module = m.replace('-', "_");
            format!("\"postern:policy/{m}@0.1.0\": ::postern_sdk::wit::{module},")
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
    for (_, iface, tr, method, params, args, ret) in &stages {
        let module = iface.replace('-', "_");
        impls.push_str(&format!(
            "impl exports::postern::policy::{module}::Guest for Adapter {{
                fn {method}({params}) -> {ret} {{
                    with_plugin(|p| <super::{ty} as ::postern_sdk::{tr}>::{method}(p, {args}))
                }}
            }}\n"
        ));
    }
    let code = format!(
        r#"
#[doc(hidden)]
#[allow(clippy::all, unused)]
#[cfg(target_arch = "wasm32")]
mod __postern_plugin {{
    use ::postern_sdk::{{Session, Verdict, Credentials, EnvelopeAddress, Message, DataResult, Outcome}};
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
