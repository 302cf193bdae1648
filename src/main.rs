//! The `fetchfs` command: parse, check, run; an error is one line on stderr and exit status 1.

use clap::Parser;
use fetchfs::cli::{Cli, Command};
use fetchfs::config::MountConfig;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => MountConfig::from_args(args).map_err(|e| e.to_string()).and_then(fetchfs::daemon::run),
    };
    if let Err(message) = result {
        eprintln!("fetchfs: {message}");
        std::process::exit(1);
    }
}
