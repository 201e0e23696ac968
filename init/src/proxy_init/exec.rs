//! Running the commands, and handing our capabilities on to them.
//!
//! **Commands.** Each runs with stdin from `/dev/null` and stdout and stderr into one pipe, so
//! its output reads as the terminal would show it (Go's `CombinedOutput`). Failures are
//! reported with Go's wording (`exit status 4`, `exec: "iptables-nft": executable file not
//! found in $PATH`), which is what proxy-init prints. Programs are found through `PATH`; the log
//! line names the file found, as Go's `Cmd.String` does.
//!
//! **Capabilities.** In a Linkerd pod the init container runs as uid 65534 with only
//! `NET_ADMIN` and `NET_RAW`, and `no_new_privs` set; the image gives this binary the file
//! capabilities `cap_net_admin,cap_net_raw+ep`, so it starts with both. The iptables programs
//! it runs carry no file capabilities, and a non-root `execve` of such a program drops every
//! capability except the *ambient* ones. So before running anything we raise both as ambient
//! capabilities (first into the inheritable set, which ambient requires, then
//! `PR_CAP_AMBIENT_RAISE`); children inherit them. Where that is not possible (run without the
//! capabilities, or with a securebit forbidding it) we say so at debug level and go on: as root
//! nothing is needed, and otherwise the iptables command's own error tells what is wrong.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use caps::{CapSet, Capability};

/// A command that could not be run, or that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecError {
    /// What it printed before failing (empty if it never started).
    pub output: Vec<u8>,
    /// Go's text for the failure.
    pub message: String,
}

/// How commands get run: [`System`] for real, a fake in tests.
pub trait Exec {
    /// Runs `argv` and returns its combined stdout and stderr.
    fn run(&mut self, argv: &[String]) -> Result<Vec<u8>, ExecError>;

    /// The command as logged.
    fn describe(&self, argv: &[String]) -> String {
        argv.join(" ")
    }
}

/// Runs commands as child processes.
#[derive(Clone, Copy, Debug, Default)]
pub struct System;

impl Exec for System {
    fn run(&mut self, argv: &[String]) -> Result<Vec<u8>, ExecError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(ExecError {
                output: Vec::new(),
                message: "exec: no command".to_string(),
            });
        };
        run_combined(program, args).map_err(|(output, message)| ExecError { output, message })
    }

    /// Like Go's `Cmd.String`: the program as found in `PATH`, else as given.
    fn describe(&self, argv: &[String]) -> String {
        let mut line = match argv.first() {
            Some(program) => look_path(program)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.clone()),
            None => String::new(),
        };
        for arg in argv.iter().skip(1) {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }
}

fn run_combined(program: &str, args: &[String]) -> Result<Vec<u8>, (Vec<u8>, String)> {
    let start_error = |e: std::io::Error| {
        let message = if e.kind() == std::io::ErrorKind::NotFound && !program.contains('/') {
            format!("exec: \"{program}\": executable file not found in $PATH")
        } else {
            format!("fork/exec {program}: {}", e.kind())
        };
        (Vec::new(), message)
    };
    // Look the program up first, as Go does: directories we may not search are passed over,
    // where execvp would report their EACCES.
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        look_path(program).ok_or_else(|| start_error(std::io::ErrorKind::NotFound.into()))?
    };
    let (mut reader, writer) = std::io::pipe().map_err(start_error)?;
    let mut command = Command::new(path);
    command
        .arg0(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(start_error)?)
        .stderr(writer);
    let mut child = command.spawn().map_err(start_error)?;
    // The command keeps copies of the pipe's write end: drop them, or the read never ends.
    drop(command);
    let mut output = Vec::new();
    let read = reader.read_to_end(&mut output);
    let status = child.wait();
    match (read, status) {
        (Ok(_), Ok(status)) if status.success() => Ok(output),
        (Ok(_), Ok(status)) => {
            let message = status_message(status);
            Err((output, message))
        }
        (Err(e), _) | (_, Err(e)) => Err((output, e.to_string())),
    }
}

/// Go's `ExitError` text.
fn status_message(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(1) => "signal: hangup".to_string(),
        Some(2) => "signal: interrupt".to_string(),
        Some(6) => "signal: aborted".to_string(),
        Some(9) => "signal: killed".to_string(),
        Some(11) => "signal: segmentation fault".to_string(),
        Some(13) => "signal: broken pipe".to_string(),
        Some(15) => "signal: terminated".to_string(),
        Some(n) => format!("signal: signal {n}"),
        None => status.to_string(),
    }
}

/// The file `PATH` gives for `program`: a program with a `/` is taken as is, otherwise the
/// first executable regular file of that name in a `PATH` directory (an empty entry is the
/// current directory).
pub fn look_path(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return is_executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The capabilities the commands need.
const NEEDED: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

/// Raises NET_ADMIN and NET_RAW as ambient capabilities of this process, so that the programs
/// it runs keep them. Returns what happened, one line per capability, for the debug log.
pub fn raise_ambient_capabilities() -> Vec<String> {
    NEEDED
        .iter()
        .map(|&cap| match raise_ambient(cap) {
            Ok(()) => format!("raised {cap} as an ambient capability"),
            Err(why) => format!("not raising {cap} as an ambient capability: {why}"),
        })
        .collect()
}

fn raise_ambient(cap: Capability) -> Result<(), String> {
    // Thread sets of this (single-threaded) process; children are forked from this thread.
    if !caps::has_cap(None, CapSet::Permitted, cap).map_err(|e| e.to_string())? {
        return Err("it is not in the permitted set".to_string());
    }
    caps::raise(None, CapSet::Inheritable, cap).map_err(|e| e.to_string())?;
    caps::raise(None, CapSet::Ambient, cap).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn combined_output_and_go_errors() {
        let out = System
            .run(&argv(&["sh", "-c", "echo out; echo err >&2; echo out2"]))
            .unwrap();
        assert_eq!(out, b"out\nerr\nout2\n");
        let e = System
            .run(&argv(&["sh", "-c", "echo broken >&2; exit 4"]))
            .unwrap_err();
        assert_eq!(e.output, b"broken\n");
        assert_eq!(e.message, "exit status 4");
        let e = System.run(&argv(&["sh", "-c", "kill -9 $$"])).unwrap_err();
        assert_eq!(e.message, "signal: killed");
        let e = System
            .run(&argv(&["remora-no-such-program-xyz", "-t", "nat"]))
            .unwrap_err();
        assert_eq!(
            e.message,
            "exec: \"remora-no-such-program-xyz\": executable file not found in $PATH"
        );
        assert!(e.output.is_empty());
        // stdin is /dev/null: reading it ends at once.
        assert_eq!(System.run(&argv(&["cat"])).unwrap(), b"");
    }

    #[test]
    fn describes_with_the_path_found() {
        let sh = look_path("sh").unwrap();
        assert!(sh.is_absolute());
        assert_eq!(
            System.describe(&argv(&["sh", "-c", "true"])),
            format!("{} -c true", sh.display())
        );
        assert_eq!(
            System.describe(&argv(&["remora-no-such-program-xyz", "-t", "nat"])),
            "remora-no-such-program-xyz -t nat"
        );
    }

    #[test]
    fn raising_capabilities_never_fails() {
        // Whatever this process holds, the result is two lines and no panic.
        let lines = raise_ambient_capabilities();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("CAP_NET_ADMIN"));
        assert!(lines[1].contains("CAP_NET_RAW"));
    }
}
