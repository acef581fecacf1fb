#!/usr/bin/env bash
# Installs and starts what pipe needs on a Debian/Ubuntu host, saying what it does: git, the
# Docker engine (docker.io), compose v1 (docker-compose), Debian's docker-registry,
# busybox-static, and a local base image made from busybox-static with `docker import` (no
# image can be pulled). Extra packages to install can follow as arguments.
# Used by scripts/demo.sh and scripts/test-deps.sh. Safe to run again: it skips whatever is there.
set -euo pipefail

say() { printf '[setup] %s\n' "$*" >&2; }

BASE_IMAGE="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"

need_pkgs=("$@")
command -v git >/dev/null || need_pkgs+=(git)
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v docker-compose >/dev/null || need_pkgs+=(docker-compose)
command -v docker-registry >/dev/null || need_pkgs+=(docker-registry)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || need_pkgs+=(busybox-static)
command -v curl >/dev/null || need_pkgs+=(curl)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing packages: ${need_pkgs[*]}; run this script as root to install them"
        exit 1
    fi
    say "installing ${need_pkgs[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${need_pkgs[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        say "no Docker engine answers and starting one needs root"
        exit 1
    fi
    # A daemon killed with its session leaves its pid file behind, and a new one refuses to
    # start. The file is stale unless its pid is a live (not zombie) process of that name.
    remove_stale_pid() {
        local file="$1" name="$2" pid
        [ -f "$file" ] || return 0
        pid="$(cat "$file" 2>/dev/null || true)"
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] &&
            ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null; then
            return 0
        fi
        say "removing stale $file"
        rm -f "$file"
    }
    remove_stale_pid /var/run/docker.pid dockerd
    remove_stale_pid /var/run/docker/containerd/containerd.pid containerd
    say "starting dockerd in the background (log: /var/log/pipe-dockerd.log)"
    nohup dockerd >/var/log/pipe-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker info >/dev/null 2>&1; then
        say "dockerd did not come up; last lines of its log:"
        tail -n 20 /var/log/pipe-dockerd.log >&2 || true
        exit 1
    fi
fi
say "Docker engine answers: $(docker version --format '{{.Server.Version}}')"

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "building base image $BASE_IMAGE from busybox-static with docker import"
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $("$rootfs/bin/busybox" --list); do
        [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$BASE_IMAGE" >/dev/null
fi
say "base image $BASE_IMAGE is ready"

