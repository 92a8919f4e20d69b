//! `postern plugin new NAME --lang rust|python|javascript [--stage S]...`:
//! writes a ready plugin folder: sources with one worked example (at
//! MAIL FROM: a blocklist, a per-sender rate in `kv`, a sender-domain check
//! in `dns`) and a pass stub for every other stage asked for, a unit test
//! against the language's fake host, a build script that works inside a
//! Postern checkout and outside one, a README, and the `postern:policy`
//! WIT this binary serves (embedded at build time). Inside the checkout's
//! `plugins/` or `examples/plugins/`, `make build` and `make test` pick it
//! up (a Rust crate is added to the workspace members). Input: operator
//! arguments (trusted); nothing is overwritten.

mod javascript;
mod python;
mod rust;

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// `postern plugin …`.
#[derive(clap::Subcommand)]
pub enum PluginAction {
    /// Write a new plugin folder NAME (in --dir, default the current
    /// directory): sources, a unit test, a build script and a README.
    New {
        /// The plugin's name: lower-case words joined by '-', each starting
        /// with a letter (it names the component, its WIT world and crate).
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// A stage to implement (repeatable; default mail-from): connect,
        /// helo, auth, mail-from, rcpt-to, data, vrfy, expn, outcome.
        #[arg(long = "stage", value_name = "S")]
        stages: Vec<String>,
        /// The folder to create the plugin in.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Rust: the postern-sdk crate (a Postern checkout's plugins/sdk);
        /// found by itself inside a checkout or next to this binary's.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Javascript,
}

/// The stages, in chain order, with their hook interface names.
pub const STAGES: [&str; 9] = [
    "connect",
    "helo",
    "auth",
    "mail-from",
    "rcpt-to",
    "data",
    "vrfy",
    "expn",
    "outcome",
];

/// The `postern:policy` package this binary serves, written into
/// `wit/deps/postern-policy/` of a new script plugin.
const WIT: [(&str, &str); 4] = [
    ("hooks.wit", include_str!("../../../../../wit/hooks.wit")),
    ("host.wit", include_str!("../../../../../wit/host.wit")),
    ("types.wit", include_str!("../../../../../wit/types.wit")),
    ("worlds.wit", include_str!("../../../../../wit/worlds.wit")),
];

/// The fake hosts the script plugins' tests import, copied next to them.
const PY_FAKE_HOST: &str = include_str!("../../../../../plugins/sdk-python/postern_testing.py");
const JS_FAKE_HOST: &str = include_str!("../../../../../plugins/sdk-js/postern-testing.mjs");

/// What every script plugin's build.sh does first: find the Postern
/// checkout it is in, if any (`root` is `/` outside one).
const BUILD_FIND_CHECKOUT: &str = r#"set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PLUGIN={{name}}
root="$here"
while [ "$root" != / ] && ! { [ -f "$root/plugins/build-lib.sh" ] && [ -f "$root/wit/worlds.wit" ]; }; do
    root="$(dirname "$root")"
done
"#;

/// And before it builds: nothing to do when the component is newer than
/// every input (`inputs`), unless FORCE=1.
const BUILD_SKIP_IF_FRESH: &str = r#"if [ "${FORCE:-0}" != 1 ] && [ -f "$out" ]; then
    fresh=1
    for f in "${inputs[@]}"; do [ "$f" -nt "$out" ] && fresh=0; done
    if [ "$fresh" = 1 ]; then
        echo "$PLUGIN: $out is up to date" >&2
        exit 0
    fi
fi
"#;

/// A build.sh template with the shared parts and the plugin's name filled in.
pub fn build_script(template: &str, name: &str) -> String {
    template
        .replace("{{find_checkout}}", BUILD_FIND_CHECKOUT)
        .replace("{{skip_if_fresh}}", BUILD_SKIP_IF_FRESH)
        .replace("{{name}}", name)
}

/// What a template needs to know.
pub struct Plan {
    pub name: String,
    pub stages: Vec<&'static str>,
    /// The folder being written.
    pub dir: PathBuf,
    /// The Postern checkout the folder is inside, if any.
    pub checkout: Option<PathBuf>,
}

/// What a language's stage stub has for the data stage, for the outcome
/// observer, and for every other stage (which answers with a verdict).
pub struct ByStage {
    pub data: &'static str,
    pub outcome: &'static str,
    pub verdict: &'static str,
}

impl ByStage {
    pub fn get(&self, stage: &str) -> &'static str {
        match stage {
            "data" => self.data,
            "outcome" => self.outcome,
            _ => self.verdict,
        }
    }
}

impl Plan {
    /// Whether the worked example (MAIL FROM: kv and dns) is included.
    pub fn example(&self) -> bool {
        self.stages.contains(&"mail-from")
    }
    /// `example` with the worked example, else `plain`.
    pub fn pick<'a>(&self, example: &'a str, plain: &'a str) -> &'a str {
        if self.example() { example } else { plain }
    }
    /// The stages that get a stub: all but `mail-from`, which the example covers.
    pub fn stub_stages(&self) -> impl Iterator<Item = &&'static str> {
        self.stages.iter().filter(|s| **s != "mail-from")
    }
    /// `mail-from` -> `mail_from`.
    pub fn snake(s: &str) -> String {
        s.replace('-', "_")
    }
    /// `my-filter` -> `MyFilter`.
    pub fn camel(&self) -> String {
        self.name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }
    /// The WIT world: imports the host interfaces the sources call, exports
    /// init, the stages and recycle.
    pub fn world(&self) -> String {
        let mut w = format!(
            "package local:{name}@0.1.0;\n\n\
             /// {name}: a Postern policy plugin made by `postern plugin new`. The\n\
             /// `postern:policy` package is in wit/deps/ (refreshed from the\n\
             /// checkout's wit/ by build.sh inside a Postern checkout).\n\
             world {name} {{\n\
             \x20   // The host interfaces the plugin calls. Import only what you call:\n\
             \x20   // `postern check` warns about an import the configuration does not\n\
             \x20   // grant (dns, kv and mail-auth need `capabilities`).\n\
             \x20   import postern:policy/log@0.2.0;\n",
            name = self.name
        );
        if self.example() {
            w.push_str(
                "    import postern:policy/kv@0.2.0;\n    import postern:policy/dns@0.2.0;\n",
            );
        }
        w.push_str("    // Its configuration, the stages it decides, and instance reuse.\n");
        w.push_str("    export postern:policy/init@0.2.0;\n");
        for s in &self.stages {
            let _ = writeln!(w, "    export postern:policy/{s}-hook@0.2.0;");
        }
        w.push_str("    export postern:policy/recycle@0.2.0;\n}\n");
        w
    }
    /// The README: what it does, how to build, test, load and try it.
    /// What a componentized plugin (Python, JavaScript) ships besides its
    /// sources: `build.sh` from the language's `build` template, the world,
    /// the README (tests run by `test`), `.gitignore` (`ignore`) and the WIT
    /// package.
    pub fn component_files(
        &self,
        lang: Lang,
        build: &str,
        test: &str,
        ignore: &str,
    ) -> Vec<(String, String)> {
        let name = &self.name;
        let wasm = format!(
            "<checkout>/target/plugins/{name}.wasm (inside a Postern checkout) or target/{name}.wasm"
        );
        let mut files = vec![
            ("build.sh".into(), build_script(build, name)),
            ("wit/world.wit".into(), self.world()),
            (
                "README.md".into(),
                self.readme(lang, "./build.sh", test, &wasm),
            ),
            (".gitignore".into(), ignore.into()),
        ];
        files.extend(wit_deps());
        files
    }

    pub fn readme(&self, lang: Lang, build: &str, test: &str, wasm: &str) -> String {
        let name = &self.name;
        let stages = self.stages.join(", ");
        let lang_name = match lang {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Javascript => "JavaScript",
        };
        let mut r = format!(
            "# {name}\n\n\
             A Postern policy plugin in {lang_name}, made by `postern plugin new`. \
             Stages: {stages}.\n\n"
        );
        if self.example() {
            r.push_str(
                "At MAIL FROM it refuses senders from `blocked_domains` (550 5.7.1), \
                 defers a sender past `max_per_sender_per_hour` messages (451 4.7.1, \
                 counted in the host's kv store) and, with `check_sender_domain`, \
                 refuses a sender domain the DNS says does not exist (550 5.1.8; \
                 DNS trouble: 451 4.4.3). Every other stage passes: write your \
                 policy there.\n\n",
            );
        } else {
            r.push_str("Every stage passes: write your policy there.\n\n");
        }
        let _ = write!(
            r,
            "## Build and test\n\n```sh\n{build}\n{test}\n```\n\n\
             The component is `{wasm}`. The unit tests run natively against a fake \
             host (log capture, in-memory kv with TTLs, scripted DNS, a settable \
             clock), with no wasm toolchain.\n\n"
        );
        let caps = if self.example() {
            "capabilities = [\"kv\", \"dns\"]   # what the MAIL FROM example calls\n"
        } else {
            ""
        };
        let config = if self.example() {
            "[plugin.config]\nblocked_domains = [\"spam.example\"]\nmax_per_sender_per_hour = 100\n\
             check_sender_domain = false\n"
        } else {
            ""
        };
        let _ = write!(
            r,
            "## Load it\n\nAdd it to your configuration and reload the running \
             server (no restart, no dropped connection):\n\n```toml\n[[plugin]]\n\
             name = \"{name}\"\npath = \"{wasm}\"\n{caps}mode = \"shadow\"             \
             # try it on live traffic: log and count, never enforce\n{config}```\n\n\
             ```sh\npostern check --config postern.toml\npostern reload --config postern.toml\n\
             postern status --config postern.toml   # its mode and, in shadow mode, how often it differed\n```\n\n\
             Drop `mode = \"shadow\"` (or set `\"enforce\"`) and reload again to let it decide.\n\n\
             **Chain order matters.** Plugins are asked in the order of the \
             `[[plugin]]` entries and the first verdict other than `pass` ends the \
             stage: put a plugin that must see every recipient before one that \
             accepts or refuses them (in the example configuration, before \
             `envelope-check` and `relay-control`).\n"
        );
        r
    }
}

/// Run `postern plugin new`; the error names what was wrong.
pub fn run(action: PluginAction) -> Result<PathBuf, String> {
    let PluginAction::New {
        name,
        lang,
        stages,
        dir,
        sdk,
    } = action;
    check_name(&name)?;
    let stages = parse_stages(&stages)?;
    let parent = absolute(&dir)?;
    if !parent.is_dir() {
        return Err(format!("{}: no such directory", parent.display()));
    }
    let target = parent.join(&name);
    if target.exists() {
        return Err(format!(
            "{} already exists: nothing was written",
            target.display()
        ));
    }
    let plan = Plan {
        name,
        stages,
        checkout: checkout_of(&parent),
        dir: target.clone(),
    };
    let files = match lang {
        Lang::Rust => {
            let sdk = find_sdk(sdk, &plan)?;
            rust::files(&plan, &sdk)?
        }
        Lang::Python => python::files(&plan),
        Lang::Javascript => javascript::files(&plan),
    };
    write_all(&target, &files)?;
    if lang == Lang::Rust {
        rust::join_workspace(&plan)?;
    }
    Ok(target)
}

/// The WIT package files under `wit/deps/postern-policy/`.
pub fn wit_deps() -> Vec<(String, String)> {
    WIT.iter()
        .map(|(f, text)| (format!("wit/deps/postern-policy/{f}"), text.to_string()))
        .collect()
}

pub fn py_fake_host() -> &'static str {
    PY_FAKE_HOST
}

pub fn js_fake_host() -> &'static str {
    JS_FAKE_HOST
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.split('-').all(|w| {
            w.starts_with(|c: char| c.is_ascii_lowercase())
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?}: use lower-case words joined by '-', each starting with a \
             letter (e.g. \"sender-policy\"): it names the WIT world, the crate and the component"
        ))
    }
}

fn parse_stages(asked: &[String]) -> Result<Vec<&'static str>, String> {
    if asked.is_empty() {
        return Ok(vec!["mail-from"]);
    }
    let mut stages = Vec::new();
    for a in asked {
        let Some(s) = STAGES.iter().find(|s| **s == a.as_str()) else {
            return Err(format!(
                "unknown stage {a:?} (stages: {})",
                STAGES.join(", ")
            ));
        };
        if !stages.contains(s) {
            stages.push(*s);
        }
    }
    // Chain order, whatever order they were asked in.
    stages.sort_by_key(|s| STAGES.iter().position(|x| x == s));
    Ok(stages)
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current directory: {e}"))?
            .join(p)
    };
    // Lexically normalised (the folder may not exist yet).
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The Postern checkout `dir` is in: the nearest ancestor holding
/// `plugins/build-lib.sh` and `wit/worlds.wit`.
fn checkout_of(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("plugins/build-lib.sh").is_file() && d.join("wit/worlds.wit").is_file())
        .map(Path::to_path_buf)
}

/// postern-sdk: --sdk, else the checkout the folder is in, else the one the
/// current directory or this binary is in.
fn find_sdk(given: Option<PathBuf>, plan: &Plan) -> Result<PathBuf, String> {
    if let Some(p) = given {
        let p = absolute(&p)?;
        return if p.join("Cargo.toml").is_file() && p.join("src/testing.rs").is_file() {
            Ok(p)
        } else {
            Err(format!(
                "--sdk {}: not the postern-sdk crate (plugins/sdk of a Postern checkout)",
                p.display()
            ))
        };
    }
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    plan.checkout
        .clone()
        .or_else(|| cwd.as_deref().and_then(checkout_of))
        .or_else(|| exe.as_deref().and_then(checkout_of))
        .map(|c| c.join("plugins/sdk"))
        .filter(|p| p.join("Cargo.toml").is_file())
        .ok_or_else(|| {
            "postern-sdk not found (it is not on crates.io): run inside a Postern checkout \
             or pass --sdk PATH (a checkout's plugins/sdk)"
                .to_string()
        })
}

/// `to` relative to `from` (both absolute).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

fn write_all(target: &Path, files: &[(String, String)]) -> Result<(), String> {
    // Into a scratch folder first, renamed into place at the end: a failure
    // leaves no half-written plugin behind.
    let scratch = target.with_file_name(format!(
        ".{}.new-{}",
        target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("plugin"),
        std::process::id()
    ));
    let result = (|| {
        for (rel, text) in files {
            let path = scratch.join(rel);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            if rel.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        std::fs::rename(&scratch, target).map_err(|e| format!("{}: {e}", target.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_stages() {
        assert!(check_name("sender-policy").is_ok() && check_name("a1-b2").is_ok());
        for bad in ["", "Sender", "a--b", "-a", "a-", "1a", "a-2", "a_b", "a.b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_stages(&[]).unwrap(), ["mail-from"]);
        let s: Vec<String> = ["data", "connect", "data"].map(String::from).into();
        assert_eq!(parse_stages(&s).unwrap(), ["connect", "data"]);
        let e = parse_stages(&["rcpt".into()]).unwrap_err();
        assert!(e.contains("\"rcpt\"") && e.contains("rcpt-to"), "{e}");
    }

    #[test]
    fn relative_paths() {
        let r = relative(Path::new("/a/b/plugins/x"), Path::new("/a/b/plugins/sdk"));
        assert_eq!(r, Path::new("../sdk"));
        assert_eq!(
            relative(Path::new("/t/x"), Path::new("/a/sdk")),
            Path::new("../../a/sdk")
        );
    }

    #[test]
    fn world_imports_what_the_sources_call() {
        let mut p = Plan {
            name: "my-filter".into(),
            stages: vec!["connect", "mail-from"],
            dir: "/tmp/my-filter".into(),
            checkout: None,
        };
        assert_eq!(p.camel(), "MyFilter");
        let w = p.world();
        assert!(w.contains("world my-filter {") && w.contains("import postern:policy/kv@0.2.0;"));
        assert!(w.contains("export postern:policy/connect-hook@0.2.0;"));
        p.stages = vec!["data"];
        assert!(!p.world().contains("/kv@"));
    }
}
