//! The `hookgate` binary: see `hookgate --help`.

// glibc malloc was ~17% of the gateway's CPU under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(hookgate::cli::main());
}
