//! `linkerd2-proxy-init`: Linkerd's init-container command, installed in Remora's image at
//! `/usr/lib/linkerd/linkerd2-proxy-init` with the file capabilities
//! `cap_net_admin,cap_net_raw+ep`. Everything is in `init/src/proxy_init/mod.rs`.

fn main() -> std::process::ExitCode {
    remora_init::proxy_init::main()
}
