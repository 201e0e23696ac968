//! `remora certs`: make the PKI a mesh needs. One root (the trust anchor) shared by every
//! cluster, one issuer per cluster under it, and one token-signing key per control plane.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use remora_control::token::TokenKey;
use remora_identity::Name;
use remora_identity::certs::Ca;

#[derive(Debug, Args)]
#[command(about = "Make the mesh's certificates: a root, per-cluster issuers, token keys")]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write a new root CA (the trust anchor): DIR/root.pem and DIR/root.key (mode 0600).
    Root {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity of the root.
        #[arg(long, default_value = "8760h", value_parser = duration)]
        lifetime: Duration,
    },
    /// Write a cluster's issuer (an intermediate CA under the root): DIR2/issuer.pem and
    /// DIR2/issuer.key (mode 0600).
    Issuer {
        /// Directory holding root.pem and root.key.
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// The cluster's trust domain, e.g. east.example.
        #[arg(long, value_name = "TD")]
        trust_domain: String,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR2")]
        out: PathBuf,
        /// Validity of the issuer (never past the root's).
        #[arg(long, default_value = "2160h", value_parser = duration)]
        lifetime: Duration,
    },
    /// Write a control plane's token-signing key: DIR/token.key (mode 0600).
    TokenKey {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    remora_runtime::duration::parse_duration(s)
}

pub fn main(args: CertsArgs) -> ExitCode {
    match run(args.command) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: CertsCommand) -> Result<Vec<PathBuf>, String> {
    match command {
        CertsCommand::Root { out, lifetime } => {
            let root = Ca::new_root("Remora root CA", lifetime).map_err(|e| e.to_string())?;
            Ok(vec![
                write(&out, "root.pem", &root.cert_pem(), 0o644)?,
                write(&out, "root.key", &root.key_pem(), 0o600)?,
            ])
        }
        CertsCommand::Issuer {
            root,
            trust_domain,
            out,
            lifetime,
        } => {
            let td: Name = trust_domain
                .parse()
                .map_err(|e| format!("--trust-domain: {e}"))?;
            let read = |f: &str| {
                std::fs::read_to_string(root.join(f))
                    .map_err(|e| format!("{}: {e}", root.join(f).display()))
            };
            let root_ca =
                Ca::from_pem(&read("root.pem")?, &read("root.key")?).map_err(|e| e.to_string())?;
            let issuer = root_ca
                .new_intermediate(&format!("identity.{td}"), lifetime)
                .map_err(|e| e.to_string())?;
            Ok(vec![
                write(&out, "issuer.pem", &issuer.cert_pem(), 0o644)?,
                write(&out, "issuer.key", &issuer.key_pem(), 0o600)?,
            ])
        }
        CertsCommand::TokenKey { out } => {
            let key = TokenKey::generate_hex().map_err(|e| e.to_string())?;
            Ok(vec![write(&out, "token.key", &format!("{key}\n"), 0o600)?])
        }
    }
}

/// Writes `name` in `dir` with `mode`, created with that mode so a key is never readable by
/// others, not even for a moment.
fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<PathBuf, String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(contents.as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
