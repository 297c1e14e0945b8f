//! The `hookgate` binary: see `hookgate --help`.

// glibc malloc was ~17% of the gateway's CPU under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Several crates link rustls with both of its crypto back ends (Pingora's connector with
    // ring, the broker clients and the listeners with aws-lc); a client config built without
    // naming one takes the process's default, so there must be exactly one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::process::exit(hookgate::cli::main());
}
