//! The `fetchfs` command: parse, check, run; an error is one line on stderr and exit status 1.
//! Run as `mount.fuse.fetchfs` (a link mount(8) finds), it takes mount(8)'s helper arguments.

use clap::{CommandFactory, Parser};
use fetchfs::cli::{Cli, Command, HELPER_NAMES, HelperCall, helper_args};
use fetchfs::config::MountConfig;

/// jemalloc rather than glibc's malloc: a file read costs many small allocations on the request
/// path (the SDK's, hyper's), and blocks are freed on other threads than allocated them. Measured
/// on `cat` of 1000 small files (s3-like): about a tenth less daemon CPU per file and 3-7 % more
/// files per second; peak RSS 0-25 MiB above glibc's tuned to two arenas.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let invoked_as = args.first().and_then(|a| a.rsplit('/').next()).unwrap_or_default();
    let cli = if HELPER_NAMES.contains(&invoked_as) {
        match helper_args(&args[1..]) {
            Ok(HelperCall::Mount(translated)) => {
                // mount(8) runs the helper for an fstab entry it does not see mounted (`mount -a`
                // again): what is mounted already is left as it is.
                if let [source, mountpoint, ..] = &args[1..]
                    && fetchfs::config::is_mounted_from(source, std::path::Path::new(mountpoint))
                {
                    eprintln!("fetchfs: {source} is already mounted at {mountpoint}");
                    return;
                }
                Cli::parse_from(translated)
            }
            Ok(HelperCall::Fake) => return,
            Err(message) => fail(&message),
        }
    } else {
        Cli::parse()
    };
    let result = match cli.command {
        Command::Mount(args) => MountConfig::from_args(*args).map_err(|e| e.to_string()).and_then(fetchfs::daemon::run),
        Command::Bench(args) => fetchfs::bench::run(*args),
        Command::Prefetch(args) => fetchfs::prefetch_command::run(&args),
        Command::Manpage { subcommand } => manpage(subcommand.as_deref()),
    };
    if let Err(message) = result {
        fail(&message);
    }
}

fn manpage(subcommand: Option<&str>) -> Result<(), String> {
    let top = Cli::command();
    let page = match subcommand {
        None => top,
        Some("mount") => top.find_subcommand("mount").cloned().unwrap_or_default().name("fetchfs-mount"),
        Some(other) => return Err(format!("no manual page for {other:?}; there is one for `mount`")),
    };
    clap_mangen::Man::new(page)
        .section("8")
        .render(&mut std::io::stdout())
        .map_err(|e| format!("writing the manual page: {e}"))
}

fn fail(message: &str) -> ! {
    eprintln!("fetchfs: {message}");
    std::process::exit(1);
}
