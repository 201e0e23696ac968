//! The binaries under test: `remora`, and `linkerd2-proxy-init` (the init binary of the image).
//! The first call in a test process runs `cargo build` for the same profile the tests were
//! built with, so the harness never runs a stale binary; later calls reuse that path. If uid
//! 2102 could not read or execute it where cargo put it, it is copied to a world-readable
//! directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static BIN: OnceLock<PathBuf> = OnceLock::new();
static INIT: OnceLock<PathBuf> = OnceLock::new();

/// Path of a freshly built `remora` binary, executable by any uid.
pub fn remora() -> &'static Path {
    BIN.get_or_init(|| build("remora", "remora"))
}

/// Path of a freshly built `linkerd2-proxy-init` (package `remora-init`), executable by any
/// uid.
pub fn proxy_init() -> &'static Path {
    INIT.get_or_init(|| build("remora-init", "linkerd2-proxy-init"))
}

fn build(package: &str, bin: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace).args([
        "build",
        "--quiet",
        "-p",
        package,
        "--bin",
        bin,
        "--message-format=json",
    ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    // Cargo gives the test process its package's variables; build scripts that track one (ring
    // tracks CARGO_MANIFEST_DIR) would otherwise see a change and rebuild half the tree, twice:
    // once here and once more at the next plain `cargo build`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                &*key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "CARGO_BIN_NAME"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build of {bin} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = format!(r#""name":"{bin}""#);
    let exe = stdout
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#) && l.contains(&name))
        .find_map(|l| {
            let start = l.find(r#""executable":""#)? + r#""executable":""#.len();
            let end = l[start..].find('"')? + start;
            Some(PathBuf::from(&l[start..end]))
        })
        .unwrap_or_else(|| panic!("cargo reported the {bin} executable"));
    if readable_by_all(&exe) {
        exe
    } else {
        copy_world_readable(&exe, bin)
    }
}

fn readable_by_all(path: &Path) -> bool {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    if mode(path) & 0o005 != 0o005 {
        return false;
    }
    path.ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .all(|dir| mode(dir) & 0o001 != 0)
}

fn copy_world_readable(exe: &Path, bin: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmt{}-bin", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create binary dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let dst = dir.join(bin);
    std::fs::copy(exe, &dst).unwrap_or_else(|e| panic!("copy {bin}: {e}"));
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod bin");
    dst
}
