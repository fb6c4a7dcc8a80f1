//! The `tikban` binary: flags, configuration, logging, then the daemon.

use std::process::ExitCode;

use tikban::config::{Config, help_text};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if let Some(arg) = args.next() {
        return match arg.as_str() {
            "--version" | "-V" => {
                println!("tikban {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            "--help" | "-h" => {
                print!("{}", help_text());
                ExitCode::SUCCESS
            }
            other => {
                eprintln!(
                    "tikban: unknown argument {other:?}; configuration comes from environment variables, see --help"
                );
                ExitCode::from(2)
            }
        };
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tikban: {e}");
            return ExitCode::from(2);
        }
    };
    tikban::run(config)
}
