//! The `hookgate` binary: see `hookgate --help`.

fn main() {
    std::process::exit(hookgate::cli::main());
}
