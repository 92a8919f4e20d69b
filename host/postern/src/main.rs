//! The `postern` binary: the command line of the `postern` library
//! (`postern::cli`).

fn main() -> std::process::ExitCode {
    postern::cli::main()
}
