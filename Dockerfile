# Remora's proxy image, usable in place of Linkerd's (annotation config.linkerd.io/proxy-image):
# every path Linkerd's chart runs is under /usr/lib/linkerd (deploy/image/assemble.sh lists
# them), the ENTRYPOINT starts the proxy with no arguments, init is its own binary with
# cap_net_admin,cap_net_raw and the proxy binary has no file capabilities. Our own manifests
# (deploy/kubernetes/) run `remora <subcommand>` through the same ENTRYPOINT.
#
# No image is built on our machines; tests/tests/image.rs runs the chart's commands from the
# same tree, assembled into a folder by deploy/image/assemble.sh.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p remora --bin remora -p remora-init --bin linkerd2-proxy-init \
 && deploy/image/assemble.sh /tree --no-build

FROM debian:bookworm-slim
# iptables provides iptables-nft, iptables-legacy and their ip6tables and -save forms.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /tree/ /
# File capabilities do not survive COPY reliably: set them in this stage. Only init gets any;
# it raises them as ambient capabilities for the iptables it runs.
RUN setcap cap_net_admin,cap_net_raw+ep /usr/lib/linkerd/linkerd2-proxy-init \
 && apt-get purge -y libcap2-bin
USER 2102:2102
ENTRYPOINT ["/usr/lib/linkerd/linkerd2-proxy"]
