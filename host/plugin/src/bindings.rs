//! The one `bindgen!` call: Rust types for the `postern:policy@0.1.0` WIT
//! package (`wit/`), generated for the host side. Trusts nothing from guests;
//! every value coming back from a plugin is validated by `verdict.rs`.

wasmtime::component::bindgen!({
    world: "postern:policy/all-stages",
    path: "../../wit/v0.1",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "postern:policy/message.message": crate::message::MessageHandle,
    },
});

pub use exports::postern::policy as hooks;
pub use postern::policy::types;
