//! The `bindgen!` calls: Rust types for both versions of the WIT contract the
//! host serves, `postern:policy@0.1.0` (`wit/v0.1/`, frozen) and
//! `postern:policy@0.2.0` (`wit/`). Trusts nothing from guests; every value
//! coming back from a plugin is validated by `verdict.rs`.

/// `postern:policy@0.1.0`: the session is a record copied into every call.
pub mod v01 {
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
}

/// `postern:policy@0.2.0`: the session is a resource lent to every call.
pub mod v02 {
    wasmtime::component::bindgen!({
        world: "postern:policy/all-stages",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "postern:policy/message.message": crate::message::MessageHandle,
            "postern:policy/types.session": crate::session::SessionHandle,
        },
    });

    pub use exports::postern::policy as hooks;
    pub use postern::policy::delivery;
    pub use postern::policy::types;
}
