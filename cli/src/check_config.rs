//! `remora proxy --check-config` (and `remora gateway --check-config`): is this environment a
//! configuration the proxy would start with?
//!
//! The environment is parsed by the proxy's own parser (`Config::from_env`,
//! `proxy/src/config/mod.rs`), so both surfaces (`REMORA_*` and Linkerd's `LINKERD2_PROXY_*`)
//! and every value's syntax are checked exactly as at start-up; the trust anchors are read and
//! parsed there too. On top of that this checks the files the configuration names, which the
//! proxy only opens once it runs:
//!
//! - the token file must be readable and not empty (its contents are never printed);
//! - the identity directory must hold a `key.p8` and `csr.der` that belong together and name
//!   the workload, or be a place where the proxy can write them. The proxy's own loader
//!   (`remora_proxy::tls::identity::documents`) writes missing files, so it is not used here:
//!   the same checks are made with the identity crate, and nothing is written.
//!
//! Nothing is bound and nothing is resolved or connected to: control-plane names are checked for
//! syntax only. The effective configuration goes to stdout and the exit is 0; a problem is
//! reported as start-up reports it, `<role>: invalid configuration: VAR="value": reason`, on
//! stderr, with exit 64.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use nix::unistd::{AccessFlags, access};
use remora_identity::Name;
use remora_identity::certs::{check_csr, key_from_pkcs8};
use remora_proxy::config::{
    Config, ConfigError, IDENTITY_DIR, IDENTITY_NAME, IDENTITY_TOKEN_FILE, IDENTITY_TRUST_ANCHORS,
};
use remora_runtime::bootstrap::EXIT_USAGE;

/// Checks the process environment as `name` (`remora proxy`) would use it.
pub fn main(name: &str, gateway: bool) -> ExitCode {
    let checked = Config::from_env()
        .and_then(|c| if gateway { c.gateway() } else { Ok(c) })
        .and_then(|c| check_files(&c).map(|notes| (c, notes)));
    match checked {
        Ok((config, notes)) => {
            print!("{}", report(name, &config, &notes));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: invalid configuration: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Checks the files `c` names; returns what was found, one line each.
fn check_files(c: &Config) -> Result<Vec<String>, ConfigError> {
    let Some(id) = &c.identity else {
        return Ok(Vec::new());
    };
    let mut notes = Vec::new();
    let fail = |setting: &'static str, path: &Path, reason: String| ConfigError {
        var: source_var(c, setting),
        value: path.display().to_string(),
        reason,
    };
    match std::fs::read(&id.token_file) {
        Ok(token) if token.iter().all(u8::is_ascii_whitespace) => {
            return Err(fail(
                IDENTITY_TOKEN_FILE,
                &id.token_file,
                "the token file is empty (or only whitespace); the identity service refuses \
                 such a token"
                    .into(),
            ));
        }
        Ok(_) => notes.push(format!(
            "token file: {} is readable",
            id.token_file.display()
        )),
        Err(e) => {
            return Err(fail(
                IDENTITY_TOKEN_FILE,
                &id.token_file,
                format!("cannot read the token file: {e}"),
            ));
        }
    }
    let now = SystemTime::now();
    let anchors = id.trust_anchors.certs();
    let expired = anchors
        .iter()
        .filter(|cert| remora_identity::verify::not_after(cert).is_ok_and(|t| t < now))
        .count();
    notes.push(format!(
        "trust anchors: {} certificate(s){}",
        anchors.len(),
        match expired {
            0 => String::new(),
            n => format!(", {n} of them expired: certificates chaining only to those fail"),
        }
    ));
    if expired == anchors.len() {
        return Err(ConfigError {
            var: source_var(c, IDENTITY_TRUST_ANCHORS),
            value: format!("<{} PEM certificates>", anchors.len()),
            reason: "every trust anchor has expired".into(),
        });
    }
    match &id.dir {
        Some(dir) => {
            let found =
                identity_dir(dir, &id.name).map_err(|reason| fail(IDENTITY_DIR, dir, reason))?;
            notes.push(format!("identity directory: {}: {found}", dir.display()));
        }
        None => notes.push("identity directory: none; the key lives in memory only".into()),
    }
    Ok(notes)
}

/// What the proxy would do with the identity directory `dir`, or why it could not start with
/// it. Mirrors `remora_proxy::tls::identity::documents` without writing.
fn identity_dir(dir: &Path, name: &Name) -> Result<String, String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err("not a directory".into()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir
                .ancestors()
                .skip(1)
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                })
                .find(|p| p.is_dir())
                .ok_or("does not exist, and neither does any parent")?;
            writable(parent).map_err(|e| {
                format!(
                    "does not exist, and the proxy cannot create it in {}: {e}",
                    parent.display()
                )
            })?;
            return Ok("does not exist yet; the proxy will create it and generate a key".into());
        }
        Err(e) => return Err(format!("cannot read it: {e}")),
    }
    let key = read_nonempty(&dir.join("key.p8"))?;
    let csr = read_nonempty(&dir.join("csr.der"))?;
    let will_write = |what: &str| {
        writable(dir)
            .map(|()| what.to_string())
            .map_err(|e| format!("{what}, but the directory is not writable: {e}"))
    };
    match (key, csr) {
        (Some(key), Some(csr)) => {
            let key = key_from_pkcs8(&key).map_err(|e| format!("key.p8: {e}"))?;
            check_csr(&csr, name, &key).map_err(|e| format!("csr.der: {e}"))?;
            Ok(format!(
                "key.p8 and csr.der belong together and name {name}"
            ))
        }
        (Some(key), None) => {
            key_from_pkcs8(&key).map_err(|e| format!("key.p8: {e}"))?;
            will_write("key.p8 loads; csr.der is missing and the proxy will write it")
        }
        (None, Some(_)) => {
            will_write("csr.der without key.p8: the proxy will generate a key and replace it")
        }
        (None, None) => will_write("empty; the proxy will generate key.p8 and csr.der"),
    }
}

/// A file's bytes; `None` when it is missing or empty (as the proxy reads the directory).
fn read_nonempty(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Whether this process may create files in `dir` (as its real uid, which is the proxy's).
fn writable(dir: &Path) -> Result<(), String> {
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| e.desc().to_string())
}

/// The variable a setting came from (`LINKERD2_PROXY_IDENTITY_DIR` under Linkerd's surface),
/// as the parser recorded it in `Config::sources` (`"value", VARIABLE`).
fn source_var(c: &Config, setting: &'static str) -> String {
    c.sources
        .iter()
        .find(|(s, _)| *s == setting)
        .and_then(|(_, from)| from.rsplit_once(", "))
        .map(|(_, var)| var)
        .filter(|var| var.starts_with("REMORA_") || var.starts_with("LINKERD2_PROXY_"))
        .unwrap_or(setting)
        .to_string()
}

/// The effective configuration, as printed on success.
fn report(name: &str, c: &Config, notes: &[String]) -> String {
    let surface = if c.linkerd.is_some() {
        "LINKERD2_PROXY_* (Linkerd's proxy environment)"
    } else {
        "REMORA_*"
    };
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("{name}: the configuration is valid\n");
    out.push_str(&format!("surface: {surface}\n"));
    out.push_str(&format!("outbound: {}\n", list(&c.outbound_addrs)));
    out.push_str(&format!("inbound: {}\n", list(&c.inbound_addrs)));
    out.push_str(&format!("admin: {}\n", c.admin_addr));
    match &c.identity {
        Some(id) => out.push_str(&format!(
            "identity: {} from {}{}\n",
            id.name,
            id.addr,
            id.svc_name
                .as_ref()
                .map_or(String::new(), |n| format!(" (presenting {n})"))
        )),
        None => out.push_str(&format!("identity: none ({IDENTITY_NAME} unset)\n")),
    }
    match &c.destination {
        Some(d) => out.push_str(&format!("destination: {}\n", d.addr)),
        None => out.push_str("destination: none; targets are forwarded as addressed\n"),
    }
    match &c.policy {
        Some(p) => out.push_str(&format!("policy: {}\n", p.addr)),
        None => out.push_str("policy: none\n"),
    }
    for note in notes {
        out.push_str(&format!("{note}\n"));
    }
    let described = c.describe();
    if described.is_empty() {
        out.push_str("every other setting is at Remora's default\n");
    } else {
        out.push_str("settings not at Remora's default:\n");
        for line in described {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(notes) = &c.linkerd {
        for (var, why) in &notes.unhonoured {
            out.push_str(&format!(
                "warning: {var} is set but has no effect in Remora: {why}\n"
            ));
        }
        for var in &notes.unknown {
            out.push_str(&format!(
                "note: {var} is not a variable Remora knows; ignored\n"
            ));
        }
    }
    out
}
