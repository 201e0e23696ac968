//! Remora's image without an image runtime: the tree `deploy/image/assemble.sh` makes (with
//! this machine's Debian pieces standing in for the base image), and containers run from it
//! as the kubelet runs them: a read-only root, a uid and gid, only the capabilities the pod
//! spec adds, `no_new_privs` when privilege escalation is off, `/run` and `/tmp` as emptyDirs,
//! volumes mounted where the spec says. Also the manifests in `deploy/`: parsed (PyYAML, which
//! `kubernetes-validate` brings), their containers' environments expanded as the kubelet
//! expands them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::bin;

/// The folder of the assembled tree (built once per test process).
pub fn tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        // Build both binaries of the profile the tests use, then assemble from them.
        let remora = bin::remora();
        let init = bin::proxy_init();
        let root = std::env::temp_dir().join(format!("rmt{}-image", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/assemble.sh");
        let profile = if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        };
        let target = remora
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        // The harness may have copied the binaries to a world-readable directory: point the
        // script at cargo's own target directory when that is where they are.
        let target = if init.starts_with(&target) {
            target
        } else {
            stage(remora, init)
        };
        let out = Command::new("bash")
            .arg(&script)
            .arg(&root)
            .args(["--profile", profile, "--no-build", "--base"])
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("run assemble.sh");
        assert!(
            out.status.success(),
            "assemble.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        root
    })
}

/// Copies the two binaries into a `target/<profile>` layout of its own, for the script.
fn stage(remora: &Path, init: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rmt{}-target", std::process::id()));
    let sub = dir.join(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    });
    std::fs::create_dir_all(&sub).expect("staging dir");
    std::fs::copy(remora, sub.join("remora")).expect("stage remora");
    std::fs::copy(init, sub.join("linkerd2-proxy-init")).expect("stage init");
    dir
}

/// A volume: a host directory mounted at `path` in the container.
#[derive(Clone, Debug)]
pub struct Volume {
    pub host: PathBuf,
    pub path: String,
    pub read_only: bool,
}

/// How the kubelet would run one container of the image.
#[derive(Clone, Debug)]
pub struct Container {
    pub uid: u32,
    pub gid: u32,
    /// The capabilities the spec adds (`NET_ADMIN`...); every other one is dropped.
    pub caps: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    pub volumes: Vec<Volume>,
    pub env: Vec<(String, String)>,
}

impl Container {
    /// Runs as `uid`, with no capabilities and `no_new_privs`.
    pub fn as_user(uid: u32) -> Self {
        Container {
            uid,
            gid: uid,
            caps: Vec::new(),
            no_new_privs: true,
            volumes: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn caps(mut self, caps: &[&str]) -> Self {
        self.caps = caps.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn volume(mut self, host: &Path, path: &str, read_only: bool) -> Self {
        self.volumes.push(Volume {
            host: host.to_path_buf(),
            path: path.to_string(),
            read_only,
        });
        self
    }

    pub fn env(mut self, env: &[(String, String)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    /// The command that runs `argv` (argv[0] a path in the image) as this container, in the
    /// network namespace `ns`, on the assembled tree as a read-only root. The pod's
    /// `/etc/hosts` (as `ip netns exec` mounts it) is the container's, as the kubelet mounts
    /// the pod's hosts file into each container.
    pub fn command(&self, ns: &str, argv: &[&str]) -> Command {
        let root = tree();
        let mut script = String::from("set -e\nR=\"$1\"; shift\n");
        script.push_str("mount --bind \"$R\" \"$R\"\n");
        // Mount points outside /run are made before the root turns read-only (the runtime
        // makes them in the container's layer).
        for v in &self.volumes {
            if !under_run(&v.path) {
                script.push_str(&format!("mkdir -p \"$R{}\"\n", v.path));
            }
        }
        script.push_str("mount -o remount,bind,ro \"$R\"\n");
        script.push_str("mount -t tmpfs -o mode=0777 run \"$R/run\"\n");
        script.push_str("mount -t tmpfs -o mode=1777 tmp \"$R/tmp\"\n");
        script.push_str("mount -t proc proc \"$R/proc\"\n");
        script.push_str("mount --rbind /dev \"$R/dev\"\n");
        script.push_str("mount --bind /etc/hosts \"$R/etc/hosts\"\n");
        for v in &self.volumes {
            let target = if under_run(&v.path) {
                let in_run = format!("/run{}", v.path.trim_start_matches("/var/run"));
                script.push_str(&format!("mkdir -p \"$R{in_run}\"\n"));
                in_run
            } else {
                v.path.clone()
            };
            script.push_str(&format!(
                "mount --bind \"{}\" \"$R{target}\"\n",
                v.host.display()
            ));
            if v.read_only {
                script.push_str(&format!("mount -o remount,bind,ro \"$R{target}\"\n"));
            }
        }
        let caps = if self.caps.is_empty() {
            "-all".to_string()
        } else {
            let added: Vec<String> = self
                .caps
                .iter()
                .map(|c| format!("+{}", c.to_ascii_lowercase()))
                .collect();
            format!("-all,{}", added.join(","))
        };
        script.push_str(&format!(
            "exec chroot \"$R\" /usr/bin/setpriv --reuid={} --regid={} --clear-groups \
             --inh-caps=-all --bounding-set={caps} {} -- \"$@\"\n",
            self.uid,
            self.gid,
            if self.no_new_privs {
                "--no-new-privs"
            } else {
                ""
            },
        ));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["--", "/bin/sh", "-c", &script, "container"])
        .arg(root)
        .args(argv)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

fn under_run(path: &str) -> bool {
    path == "/var/run" || path.starts_with("/var/run/") || path.starts_with("/run/")
}

/// Every YAML document of `path` as JSON (through PyYAML); `None` when PyYAML is missing.
pub fn yaml_documents(path: &Path) -> Option<Vec<serde_json::Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml\n\
             json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No module named 'yaml'"),
            "{} does not parse as YAML: {err}",
            path.display()
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("PyYAML's JSON"))
}

/// What the kubelet knows of a pod, for `fieldRef`s.
#[derive(Clone, Debug)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub ips: Vec<String>,
    pub node: String,
    pub service_account: String,
}

impl PodFacts {
    fn field(&self, path: &str) -> Option<String> {
        Some(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "metadata.uid" => self.uid.clone(),
            "status.podIP" => self.ips.first()?.clone(),
            "status.podIPs" => self.ips.join(","),
            "spec.nodeName" => self.node.clone(),
            "spec.serviceAccountName" => self.service_account.clone(),
            _ => return None,
        })
    }
}

/// A container's `env` as the kubelet gives it to the process: `fieldRef`s resolved, and
/// `$(NAME)` replaced by the value of a variable defined earlier in the list (`$$` escapes a
/// `$`; a reference to anything else is left as written).
pub fn expand_env(env: &serde_json::Value, pod: &PodFacts) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in env.as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = item["name"].as_str().expect("env name").to_string();
        let value = if let Some(path) = item["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            pod.field(path)
                .unwrap_or_else(|| panic!("unknown fieldRef {path}"))
        } else {
            let defined: HashMap<&str, &str> =
                out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            expand(item["value"].as_str().unwrap_or(""), &defined)
        };
        out.push((name, value));
    }
    out
}

fn expand(raw: &str, defined: &HashMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(')
            && let Some(end) = r.find(')')
            && let Some(v) = defined.get(&r[..end])
        {
            out.push_str(v);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Every container (init containers first) of every pod template in `docs`, with its pod
/// spec.
pub fn containers(docs: &[serde_json::Value]) -> Vec<(serde_json::Value, serde_json::Value)> {
    let mut out = Vec::new();
    for d in docs {
        let spec = if d["kind"] == "Pod" {
            &d["spec"]
        } else {
            &d["spec"]["template"]["spec"]
        };
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().map(Vec::as_slice).unwrap_or_default() {
                out.push((c.clone(), spec.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_expands_earlier_variables_only() {
        let env = serde_json::json!([
            {"name": "_pod_ns", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "A", "value": "$(_pod_ns).$(B).$$(_pod_ns)"},
            {"name": "B", "value": "b"},
            {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
        ]);
        let pod = PodFacts {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "u".into(),
            ips: vec!["10.0.0.1".into(), "fd00::1".into()],
            node: "n".into(),
            service_account: "web".into(),
        };
        let got = expand_env(&env, &pod);
        assert_eq!(got[1].1, "shop.$(B).$(_pod_ns)");
        assert_eq!(got[3].1, "10.0.0.1,fd00::1");
    }
}
