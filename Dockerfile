# Remora sidecar image. The proxy runs as uid 2102; an init container runs the same image as root
# (with NET_ADMIN) and `init` to install the interception rules.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p remora --bin remora

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/remora /usr/local/bin/remora
USER 2102:2102
ENTRYPOINT ["remora"]
CMD ["proxy"]
