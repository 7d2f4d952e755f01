# drctl for Kubernetes (CronJobs and the heartbeat Deployment in
# deploy/kubernetes/). Multi-stage: build with the Rust toolchain, run on a
# distroless base (glibc, CA certificates, no shell, no package manager) as
# the unprivileged `nonroot` user (uid 65532).
#
#   docker build -t registry.example.com/drctl:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p drctl \
 && install -D -m 0755 target/release/drctl /out/drctl

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/drctl /usr/local/bin/drctl
COPY runbooks /etc/drctl/runbooks
COPY checks /etc/drctl/checks
COPY drills /etc/drctl/drills
WORKDIR /etc/drctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/drctl"]
CMD ["--help"]
