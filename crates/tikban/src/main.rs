//! The `tikban` binary: flags, configuration, logging, then the daemon.

use std::process::ExitCode;

use tikban::config::{Config, help_text};

fn main() -> ExitCode {
    #[cfg(feature = "heap-profile")]
    tikban::heap::set_probe(counting::read);
    let mut args = std::env::args().skip(1);
    if let Some(arg) = args.next() {
        return match arg.as_str() {
            "--version" | "-V" => {
                println!("tikban {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            "--help" | "-h" => {
                print!("{}", help_text());
                print!("{GUARD_HELP}");
                print!("{}", tikban::checks::HELP);
                ExitCode::SUCCESS
            }
            "--healthcheck" => tikban::checks::healthcheck::main(),
            "check" => check(args.collect()),
            "guard" => guard::main(args.collect()),
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

/// `tikban check`: the daemon's configuration (exit 2 when invalid, as the daemon), then the
/// checklist.
fn check(args: Vec<String>) -> ExitCode {
    if let Some(arg) = args.first() {
        eprintln!("tikban check: unexpected argument {arg:?}; it takes none (see tikban --help)");
        return ExitCode::from(2);
    }
    match Config::from_env() {
        Ok(config) => tikban::checks::cli(config),
        Err(e) => {
            eprintln!("tikban: {e}");
            ExitCode::from(2)
        }
    }
}

/// The `--help` lines about the offline subcommand.
const GUARD_HELP: &str = "\nOffline log replay (no router, no LAPI):\n  \
     tikban guard replay [OPTIONS] FILE|-\n      \
     runs guard's brute-force detectors over a RouterOS log file and prints the bans it would \
     make; see tikban guard replay --help\n";

/// `tikban guard …`: argument dispatch and the file or stdin; the replay itself is
/// `tikban::guard::replay` (sans-IO apart from the reader and writer it is given).
mod guard {
    use std::io::{self, BufReader};
    use std::process::ExitCode;
    use std::time::{SystemTime, UNIX_EPOCH};

    use tikban::guard::Timestamp;
    use tikban::guard::replay::{self, Command, ReplayError};

    pub fn main(args: Vec<String>) -> ExitCode {
        let args = match replay::parse_args(&args) {
            Ok(Command::Help) => {
                print!("{}", replay::usage());
                return ExitCode::SUCCESS;
            }
            Ok(Command::Replay(a)) => a,
            Err(e) => {
                eprintln!("tikban guard: {e} (see tikban guard replay --help)");
                return ExitCode::from(2);
            }
        };
        // Syslog times carry no year: the current one unless --year says otherwise.
        let year = args.year.unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            Timestamp::from_millis(now).date().year()
        });
        // A random hash key, so addresses in a file cannot be aimed at one probe chain of the
        // source table. Detections do not depend on it.
        let key: [u64; 2] = rand::random();
        let stdout = io::stdout().lock();
        let result = if args.path == "-" {
            replay::run(io::stdin().lock(), stdout, args.settings, year, key)
        } else {
            match std::fs::File::open(&args.path) {
                Ok(f) => replay::run(
                    BufReader::with_capacity(64 * 1024, f),
                    stdout,
                    args.settings,
                    year,
                    key,
                ),
                Err(e) => {
                    eprintln!("tikban guard: cannot open {:?}: {e}", args.path);
                    return ExitCode::FAILURE;
                }
            }
        };
        match result {
            Ok(_) => ExitCode::SUCCESS,
            // `tikban guard replay … | head`: the reader went away; nothing more to say.
            Err(ReplayError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tikban guard: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// The counting allocator of the `heap-profile` feature ([`tikban::heap`]): the system allocator,
/// with live and peak bytes kept in two atomics.
#[cfg(feature = "heap-profile")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use tikban::heap::Allocated;

    static CURRENT: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    struct Counting;

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn grew(by: usize) {
        let now = CURRENT.fetch_add(by, Relaxed) + by;
        PEAK.fetch_max(now, Relaxed);
    }

    // SAFETY: every call goes to `System` with the caller's arguments unchanged; the counters
    // only observe sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as `alloc`.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                grew(layout.size());
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator (that is, from `System`) with `layout`.
            unsafe { System.dealloc(ptr, layout) };
            CURRENT.fetch_sub(layout.size(), Relaxed);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as `dealloc` for `ptr` and `layout`; the caller upholds `new_size`'s rules.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                if new_size >= layout.size() {
                    grew(new_size - layout.size());
                } else {
                    CURRENT.fetch_sub(layout.size() - new_size, Relaxed);
                }
            }
            p
        }
    }

    pub fn read() -> Allocated {
        Allocated {
            current: CURRENT.load(Relaxed),
            peak: PEAK.load(Relaxed),
        }
    }
}
