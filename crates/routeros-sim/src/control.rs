//! A line-based control language for the sim, so a process that is not Rust (the `routeros-sim`
//! binary with `--control-stdin`, and through it the demo) can steer it like tests do.
//!
//! One command per line; words are separated by single spaces and the last argument takes the
//! rest of the line:
//!
//! ```text
//! log <topics> <message...>            add a memory-log entry      -> ok <.id>
//! session add <name> <address> <via>   add a /user/active row     -> ok <.id>
//! session remove <.id>                 end a /user/active row     -> ok
//! memory <total-bytes> <free-bytes>    set /system/resource RAM    -> ok
//! ```

use crate::memlog::NewLogEntry;
use crate::sim::{Sim, SimError};

/// Longest control line accepted, in bytes.
pub const MAX_CONTROL_LINE: usize = 64 * 1024;

impl Sim {
    /// Applies one control line (see the [`control`](crate::control) grammar) and returns what to
    /// print after `ok`, or why the line was refused.
    pub fn apply_control(&self, line: &str) -> Result<String, SimError> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.len() > MAX_CONTROL_LINE {
            return Err(refuse("line too long"));
        }
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "log" => {
                let (topics, message) = rest
                    .split_once(' ')
                    .ok_or_else(|| refuse("usage: log <topics> <message>"))?;
                if topics.is_empty() {
                    return Err(refuse("usage: log <topics> <message>"));
                }
                Ok(self.push_log(NewLogEntry::new(topics, message)))
            }
            "session" => {
                let (what, args) = rest.split_once(' ').unwrap_or((rest, ""));
                match what {
                    "add" => {
                        let mut words = args.split(' ');
                        let (Some(name), Some(address), Some(via), None) =
                            (words.next(), words.next(), words.next(), words.next())
                        else {
                            return Err(refuse("usage: session add <name> <address> <via>"));
                        };
                        if name.is_empty() || via.is_empty() {
                            return Err(refuse("usage: session add <name> <address> <via>"));
                        }
                        self.add_active_session(name, address, via)
                    }
                    "remove" => {
                        if self.remove_active_session(args) {
                            Ok(String::new())
                        } else {
                            Err(refuse("no such session"))
                        }
                    }
                    _ => Err(refuse("usage: session add|remove ...")),
                }
            }
            "memory" => {
                let mut words = rest.split(' ').map(str::parse::<u64>);
                match (words.next(), words.next(), words.next()) {
                    (Some(Ok(total)), Some(Ok(free)), None) => {
                        self.set_memory(total, free);
                        Ok(String::new())
                    }
                    _ => Err(refuse("usage: memory <total-bytes> <free-bytes>")),
                }
            }
            "" => Err(refuse("empty line")),
            other => Err(refuse(&format!("unknown control command {other:?}"))),
        }
    }
}

fn refuse(message: &str) -> SimError {
    SimError {
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use crate::{Sim, SimConfig};

    #[test]
    fn log_lines_reach_the_memory_log() {
        let sim = Sim::new(SimConfig::default());
        let id = sim
            .apply_control(
                "log system,error,critical login failure for user  from 192.0.2.7 via ssh\n",
            )
            .unwrap();
        let logs = sim.logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].id, id);
        assert_eq!(logs[0].topics, "system,error,critical");
        // The message keeps its inner spaces (an empty user name leaves two).
        assert_eq!(
            logs[0].message,
            "login failure for user  from 192.0.2.7 via ssh"
        );
    }

    #[test]
    fn refuses_bad_lines_without_panicking() {
        let sim = Sim::new(SimConfig::default());
        for bad in [
            "",
            "log",
            "log topicsonly",
            "log  message",
            "frob x",
            "\u{0}",
        ] {
            assert!(sim.apply_control(bad).is_err(), "{bad:?}");
        }
        let long = format!("log t {}", "x".repeat(super::MAX_CONTROL_LINE));
        assert!(sim.apply_control(&long).is_err());
        assert!(sim.logs().is_empty());
        assert!(sim.active_sessions().is_empty());
    }
}
