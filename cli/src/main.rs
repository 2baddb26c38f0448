//! The `aigate` command line: `check` and `explain` over the filter's own code (see
//! `docs/CLI.md`). Native only.

#[cfg(target_arch = "wasm32")]
compile_error!(
    "the aigate CLI is native only; build the filter with `cargo build --release --target wasm32-wasip1` \
     at the repository root (a CLI built for wasm32 would overwrite target/wasm32-wasip1/release/aigate.wasm)"
);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |name: &str| std::env::var(name).ok();
    let code = aigate_cli::run(&args, &env, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::exit(code);
}
