//! Benchmark (not a test): the floor of one component-model call in this
//! wasmtime build, with no Postern code in the way. A hand-written component
//! exports an empty function and functions taking strings; each is called on
//! a live instance, synchronously and asynchronously (the way Postern calls
//! plugins: on a fiber, under an epoch deadline and a tokio timeout).
//!
//! ```sh
//! cargo run --release -p postern-plugin --example call_floor [-- ITERATIONS]
//! ```
//!
//! What it tells: how much of a plugin call's cost (`plugin_bench`) is the
//! runtime's fixed price per call and per string lowered into the guest,
//! which no host-side change can remove.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, TypedFunc};
use wasmtime::{Config, Engine, Store};

/// `empty: func()`, `one: func(s: string)`, `five: func(five strings)`.
/// The guest's `realloc` is a bump allocator reset by every call, so the
/// figures are the runtime's cost, not a guest malloc's.
const COMPONENT: &str = r#"
(component
  (core module $m
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "empty"))
    (func (export "one") (param i32 i32)
      (global.set $next (i32.const 1024)))
    (func (export "five") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32)
      (global.set $next (i32.const 1024)))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $next))
      (global.set $next (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
  )
  (core instance $i (instantiate $m))
  (func (export "empty") (canon lift (core func $i "empty")))
  (func (export "one") (param "s" string)
    (canon lift (core func $i "one") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (func (export "five")
    (param "a" string) (param "b" string) (param "c" string) (param "d" string) (param "e" string)
    (canon lift (core func $i "five") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
)
"#;

type Five = (String, String, String, String, String);

fn per(d: Duration, n: u32) -> String {
    format!("{:>8.3} µs", d.as_secs_f64() * 1e6 / n as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> wasmtime::Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let component = Component::new(&engine, wat::parse_str(COMPONENT)?)?;
    let linker: Linker<()> = Linker::new(&engine);
    let mut store = Store::new(&engine, ());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate_async(&mut store, &component).await?;
    let empty: TypedFunc<(), ()> = instance.get_typed_func(&mut store, "empty")?;
    let one: TypedFunc<(String,), ()> = instance.get_typed_func(&mut store, "one")?;
    let five: TypedFunc<Five, ()> = instance.get_typed_func(&mut store, "five")?;
    let s = || "client.example.org".to_string();
    let five_args = || (s(), s(), s(), s(), s());

    println!("{n} calls per row on one live instance\n");
    println!("{:<44} {:>11}", "call", "per call");
    macro_rules! row {
        ($label:expr, $body:expr) => {{
            for _ in 0..n / 10 {
                $body;
            }
            let t = Instant::now();
            for _ in 0..n {
                $body;
            }
            println!("{:<44} {}", $label, per(t.elapsed(), n));
        }};
    }
    row!("empty(), sync", {
        empty.call(&mut store, ())?;
    });
    row!("empty(), async (on a fiber)", {
        empty.call_async(&mut store, ()).await?;
    });
    row!("empty(), async + deadline + tokio timeout", {
        store.set_epoch_deadline(1000);
        tokio::time::timeout(Duration::from_secs(1), async {
            empty.call_async(&mut store, ()).await
        })
        .await??;
    });
    row!("one(string), sync", {
        one.call(&mut store, (s(),))?;
    });
    row!("one(string), async", {
        one.call_async(&mut store, (s(),)).await?;
    });
    row!("five(5 strings), sync", {
        five.call(&mut store, five_args())?;
    });
    row!("five(5 strings), async", {
        five.call_async(&mut store, five_args()).await?;
    });
    Ok(())
}
