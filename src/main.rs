//! The `polly` binary: parses arguments, starts tracing, runs the library, maps errors to
//! one line on stderr and a non-zero exit code.

use clap::Parser;

/// jemalloc, not the system malloc: Polly's resident memory then follows its live heap under
/// a steady load instead of growing with fragmentation (see Cargo.toml and BENCHMARKS.md,
/// "Load and soak").
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = polly::cli::Cli::parse();
    if !matches!(
        cli.command,
        polly::cli::Command::Serve(_) | polly::cli::Command::Node(_)
    ) {
        // Client commands print to stdout; piped into `head` or `grep -q`, they end quietly
        // when the reader goes away, as other command-line tools do, instead of panicking on
        // EPIPE (Rust ignores SIGPIPE by default). The server keeps ignoring it: a peer that
        // closes its connection must never end the process.
        // SAFETY: called before any thread is started; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POLLY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("polly: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(polly::cli::run(cli));
    // Do not wait for tasks still running (a deposed leader stops at once).
    rt.shutdown_background();
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("polly: error: {}", msg.join(": "));
            let code = polly::cli::exit_code(&e);
            std::process::ExitCode::from(code)
        }
    }
}
