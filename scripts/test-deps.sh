#!/usr/bin/env bash
# Installs and starts what the test suite needs on Debian/Ubuntu, saying what it does: what
# scripts/setup-docker.sh sets up (git, Docker engine, compose, docker-registry, busybox-static
# and the base image), plus the tools the tests drive (htpasswd, python3, systemd-analyze,
# openssl, GNU time, nginx, openssh-server, the TLS headers the build links, chromium for the
# status page's rendering tests, dpkg-dev, binutils and lintian for the Debian package's test,
# Prometheus, promtool and node_exporter for the metrics' tests, the secrets stores' clients:
# Debian's awscli, pass, gopass and gnupg, with moto's server from PyPI as a local AWS
# endpoint) and a single-node swarm.
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
[ -x /usr/bin/aws ] || extra+=(awscli)
command -v pass >/dev/null || extra+=(pass)
command -v gopass >/dev/null || extra+=(gopass)
command -v gpg >/dev/null || extra+=(gnupg)
python3 -m venv --help >/dev/null 2>&1 || extra+=(python3-venv)
scripts/setup-docker.sh "${extra[@]}"

# moto is not packaged by Debian: its server goes into a virtualenv of its own (PEP 668 keeps
# pip out of the system's Python), linked onto PATH.
if ! command -v moto_server >/dev/null; then
    say "installing moto's server from PyPI into /opt/pipe-test/moto (a local AWS endpoint for the secrets-store tests)"
    python3 -m venv /opt/pipe-test/moto
    /opt/pipe-test/moto/bin/pip install --quiet 'moto[server]'
    ln -sf /opt/pipe-test/moto/bin/moto_server /usr/local/bin/moto_server
fi

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != "active" ]; then
    say "initialising a single-node swarm on 127.0.0.1 (for the swarm deploy test)"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
