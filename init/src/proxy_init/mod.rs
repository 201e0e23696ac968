//! A drop-in for Linkerd's `linkerd2-proxy-init` (proxy-init v2.4.9): the command of the
//! `linkerd-init` init container, which installs the iptables rules that send a pod's TCP
//! traffic through its proxy. The binary is `init/src/bin/linkerd2-proxy-init.rs`.
//!
//! **Why.** Linkerd's chart runs `/usr/lib/linkerd/linkerd2-proxy-init <args>` from the *proxy*
//! image, so a workload switched to Remora's image by annotation runs this program in its init
//! container. It takes proxy-init's command line ([`flags`]) and runs the same commands
//! ([`firewall`]) in the same order, with the same comments on the rules, so that the chart's
//! arguments, Linkerd's tooling and people reading the rules see no difference. It is a small
//! binary of its own because the image gives it file capabilities (see [`exec`]), which the
//! proxy binary must not have.
//!
//! **What a run does** ([`run`]):
//!
//! 1. with `--timeout-close-wait-secs N` (N ≠ 0), `sysctl -w
//!    net.netfilter.nf_conntrack_tcp_timeout_close_wait=N`, even with `--simulate`, its output
//!    logged in the default format (proxy-init applies the log options only after this);
//! 2. the log format and level are applied; a bad level fails the run;
//! 3. the IPv4 pass, then, unless `--ipv6=false`, the IPv6 pass with the same options. A pass
//!    ([`configure`]) runs `<save> -t nat` (a failure aborts), builds the commands from what it
//!    printed, runs them in order (the first failure fails the run), then runs `<save> -t nat`
//!    again to log the result (its failure is ignored).
//!
//! Each command line is logged at info before it runs, and its output, when there is some,
//! after. With `--netns` every command (saves included) runs through `nsenter --net=<netns>
//! --`; with `--simulate` commands are only logged, so the first save reads as empty and the
//! chains are "created".
//!
//! **Exit status.** 0 on success or `--help`; 1 on any error, with `Error: <why>` and the usage
//! on stderr, as cobra prints them. Logs go to stdout ([`log`]).
//!
//! This is separate from `remora init` (`init/src/lib.rs`), which installs Remora's own chains
//! (`REMORA_INBOUND`/`REMORA_OUTBOUND`) with plain `iptables`.

pub mod exec;
pub mod firewall;
pub mod flags;
pub mod gostr;
pub mod log;

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use exec::Exec;
use firewall::Firewall;
use flags::Options;
use log::{Format, Level, Logger};

/// The program: reads `std::env::args`, raises the capabilities, runs, and exits 0 or 1.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let opts = match flags::parse(&args) {
        Ok(opts) => opts,
        Err(e) => return fail(&e),
    };
    if opts.help {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(flags::help().as_bytes());
        let _ = out.flush();
        return ExitCode::SUCCESS;
    }
    let notes = exec::raise_ambient_capabilities();
    let mut logger = Logger::new(std::io::stdout());
    match run(&opts, &mut exec::System, &mut logger, &notes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Cobra's way out: the error, then the usage, on stderr; exit status 1.
fn fail(error: &str) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "Error: {error}\n{}\n", flags::USAGE);
    ExitCode::from(1)
}

/// Everything after reading the flags. `notes` are logged at debug once the log level is set.
pub fn run<E: Exec, W: Write>(
    opts: &Options,
    exec: &mut E,
    log: &mut Logger<W>,
    notes: &[String],
) -> Result<(), String> {
    if opts.timeout_close_wait_secs != 0 {
        let sysctl = [
            "sysctl".to_string(),
            "-w".to_string(),
            format!(
                "net.netfilter.nf_conntrack_tcp_timeout_close_wait={}",
                opts.timeout_close_wait_secs
            ),
        ];
        match exec.run(&sysctl) {
            Ok(output) => log.info(&output),
            Err(e) => {
                log.error(&e.output);
                return Err(e.message);
            }
        }
    }

    log.format = Format::parse(&opts.log_format);
    log.level = Level::parse(&opts.log_level)?;
    for note in notes {
        log.debug(note);
    }

    let trace_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for ipv6 in [false, true] {
        if ipv6 && !opts.ipv6 {
            break;
        }
        let firewall = Firewall::new(opts, ipv6)?;
        configure(&firewall, exec, log, trace_id)?;
    }
    Ok(())
}

/// One family's pass: save, rules, save.
pub fn configure<E: Exec, W: Write>(
    firewall: &Firewall,
    exec: &mut E,
    log: &mut Logger<W>,
    trace_id: u64,
) -> Result<(), String> {
    log.debug(format!("tracing script execution as [{trace_id}]"));
    log.debug(format!("using '{}' to set-up firewall rules", firewall.bin));
    log.debug(format!(
        "using '{}' to list all available rules",
        firewall.save_bin
    ));

    let saved = match execute(firewall, exec, log, firewall.save_command()) {
        Ok(saved) => saved,
        Err(e) => {
            log.error("aborting firewall configuration");
            return Err(e);
        }
    };
    let commands = firewall.commands(&saved);
    for skipped in &commands.skipped_ports {
        log.error(skipped);
    }
    if firewall.use_wait_flag {
        log.debug("'useWaitFlag' set: iptables will wait for xtables to become available");
    }
    for command in commands.commands {
        execute(firewall, exec, log, command)?;
    }
    let _ = execute(firewall, exec, log, firewall.save_command());
    Ok(())
}

/// Logs and (unless simulating) runs one command, in the namespace if one is set.
fn execute<E: Exec, W: Write>(
    firewall: &Firewall,
    exec: &mut E,
    log: &mut Logger<W>,
    argv: Vec<String>,
) -> Result<Vec<u8>, String> {
    let argv = firewall.in_netns(argv);
    log.info(exec.describe(&argv));
    if firewall.simulate {
        return Ok(Vec::new());
    }
    match exec.run(&argv) {
        Ok(output) => {
            if !output.is_empty() {
                log.info(&output);
            }
            Ok(output)
        }
        Err(e) => {
            if !e.output.is_empty() {
                log.info(&e.output);
            }
            Err(e.message)
        }
    }
}

#[cfg(test)]
mod tests;
