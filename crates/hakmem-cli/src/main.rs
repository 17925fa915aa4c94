//! `hakmem`: run a program with libhakmem.so preloaded (`hakmem run`), or
//! run it and confirm from its statistics that hakmem served its
//! allocations (`hakmem check`). See `hakmem --help` (cli.rs) for the
//! behaviour and exit statuses.

mod cli;
mod elf;
mod json;
mod launch;
mod preload;
mod report;
mod sys;

use std::ffi::OsString;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match cli::parse(&args) {
        Ok(cli::Parsed::Help) => {
            print!("{}", cli::HELP);
            0
        }
        Ok(cli::Parsed::Version) => {
            println!("hakmem {} (launcher)", env!("CARGO_PKG_VERSION"));
            println!("{}", launch::library_status());
            0
        }
        Ok(cli::Parsed::Go(opts)) => launch::go(opts),
        Err(e) => {
            eprintln!("hakmem: {e}");
            eprintln!("hakmem: usage: hakmem run [--stats] [--json] [--verbose] [--flag NAME=VALUE]... [--lib PATH] -- CMD [ARGS...]; see hakmem --help");
            cli::EXIT_USAGE
        }
    };
    std::process::exit(code);
}
