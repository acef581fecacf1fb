#!/usr/bin/env bash
# Installs and starts what the test suite needs on Debian/Ubuntu, saying what it does: what
# scripts/setup-docker.sh sets up (git, Docker engine, compose, docker-registry, busybox-static
# and the base image), plus the tools the tests drive (htpasswd, python3, systemd-analyze,
# openssl, GNU time, nginx, openssh-server, the TLS headers the build links, chromium for the
# status page's rendering tests, dpkg-dev, binutils and lintian for the Debian package's test,
# Prometheus, promtool and node_exporter for the metrics' tests) and a single-node swarm.
# Safe to run again: it skips whatever is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[test-deps] %s\n' "$*" >&2; }

extra=()
command -v htpasswd >/dev/null || extra+=(apache2-utils)
command -v python3 >/dev/null || extra+=(python3)
command -v systemd-analyze >/dev/null || extra+=(systemd)
command -v openssl >/dev/null || extra+=(openssl)
[ -x /usr/bin/time ] || extra+=(time)
command -v pgrep >/dev/null || extra+=(procps)
[ -x /usr/sbin/nginx ] || extra+=(nginx)
[ -x /usr/sbin/sshd ] || extra+=(openssh-server)
command -v pkg-config >/dev/null || extra+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || extra+=(libssl-dev)
command -v chromium >/dev/null || extra+=(chromium)
command -v dpkg-shlibdeps >/dev/null || extra+=(dpkg-dev)
command -v strip >/dev/null || extra+=(binutils)
command -v lintian >/dev/null || extra+=(lintian)
command -v setpriv >/dev/null || extra+=(util-linux)
command -v promtool >/dev/null || extra+=(prometheus)
command -v prometheus-node-exporter >/dev/null || extra+=(prometheus-node-exporter)
scripts/setup-docker.sh "${extra[@]}"

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != "active" ]; then
    say "initialising a single-node swarm on 127.0.0.1 (for the swarm deploy test)"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
