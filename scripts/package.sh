#!/usr/bin/env bash
# Builds the Debian package of pipe with dpkg-deb, saying what it does:
#
#   scripts/package.sh                  cargo build --release, then target/debian/pipe_VERSION_ARCH.deb
#   scripts/package.sh --bin PATH       package a binary already built (the package test does)
#   --out DIR                           where the .deb goes (default target/debian)
#   --version VERSION                   the package's version (default: Cargo.toml's)
#   --compression xz|gzip|none          dpkg-deb's -Z (default xz; the test takes gzip, faster)
#
# What goes in: /usr/bin/pipe (stripped); the systemd units as `pipe generate systemd` writes
# them for /usr/bin/pipe; bash, zsh and fish completions; the man pages; pipeline.example.toml
# as the conffile /etc/pipe/pipeline.toml; a lintian override for what lintian cannot know.
# The maintainer scripts (packaging/debian/) make the `pipe` system user in the `docker`
# group with /var/lib/pipe as its home; the units are installed, not enabled (the pipeline
# file needs editing first). Needs dpkg-dev (dpkg-shlibdeps), binutils (strip, readelf) and,
# for the OpenSSL that is linked in, libssl-dev (whose version Built-Using records).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$PWD"

say() { printf '[package] %s\n' "$*" >&2; }

bin="" out="$root_dir/target/debian" version="" compression=xz
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --compression) compression="$2"; shift 2 ;;
        *) echo "usage: scripts/package.sh [--bin PATH] [--out DIR] [--version VERSION] [--compression xz|gzip|none]" >&2; exit 2 ;;
    esac
done
for tool in dpkg-deb dpkg-shlibdeps strip readelf gzip; do
    command -v "$tool" >/dev/null || { echo "scripts/package.sh: \`$tool\` is missing (apt-get install dpkg-dev binutils)" >&2; exit 1; }
done
if [ -z "$version" ]; then
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
fi
if [ -z "$bin" ]; then
    say "building the release binary: cargo build --release"
    cargo build --quiet --release
    bin="$root_dir/target/release/pipe"
fi
arch=$(dpkg --print-architecture)
# Reproducible: every date in the package is the last commit's.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg="$work/pipe"
say "laying out the package in $pkg"
install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/etc/pipe" "$pkg/lib/systemd/system" \
    "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
    "$pkg/usr/share/fish/vendor_completions.d" "$pkg/usr/share/man/man1" "$pkg/usr/share/doc/pipe" \
    "$pkg/usr/share/lintian/overrides"
install -m 0755 "$bin" "$pkg/usr/bin/pipe"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$pkg/usr/bin/pipe"

"$pkg/usr/bin/pipe" generate systemd "$work/units" --bin /usr/bin/pipe -q
for unit in "$work"/units/*; do
    install -m 0644 "$unit" "$pkg/lib/systemd/system/"
done
install -m 0644 completions/pipe.bash "$pkg/usr/share/bash-completion/completions/pipe"
install -m 0644 completions/_pipe "$pkg/usr/share/zsh/vendor-completions/_pipe"
install -m 0644 completions/pipe.fish "$pkg/usr/share/fish/vendor_completions.d/pipe.fish"
for page in man/*.1; do
    gzip -9n <"$page" >"$pkg/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 pipeline.example.toml "$pkg/etc/pipe/pipeline.toml"
install -m 0644 packaging/debian/copyright "$pkg/usr/share/doc/pipe/copyright"
install -m 0644 packaging/debian/lintian-overrides "$pkg/usr/share/lintian/overrides/pipe"
{
    printf 'pipe (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Built from the repository by scripts/package.sh; the changes are in\n'
    printf '    /usr/share/doc/pipe/CHANGELOG.md.gz.\n\n'
    printf ' -- pipe developers <pipe@packages.invalid>  %s\n' "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$pkg/usr/share/doc/pipe/changelog.gz"
gzip -9n <CHANGELOG.md >"$pkg/usr/share/doc/pipe/CHANGELOG.md.gz"
chmod 0644 "$pkg"/usr/share/man/man1/* "$pkg"/usr/share/doc/pipe/*

for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$pkg/DEBIAN/$script"
done
printf '/etc/pipe/pipeline.toml\n' >"$pkg/DEBIAN/conffiles"
chmod 0644 "$pkg/DEBIAN/conffiles"

say "computing the shared-library dependencies: dpkg-shlibdeps"
mkdir -p "$work/src/debian"
printf 'Source: pipe\n\nPackage: pipe\nArchitecture: any\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e "$pkg/usr/bin/pipe" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')

# OpenSSL is linked into the binary (.cargo/config.toml), not loaded from libssl3 at run time:
# Built-Using names the source package it came from, so an OpenSSL security update shows that
# pipe needs rebuilding (`dpkg-query -W -f '${Built-Using}' pipe`). Debian 12's packages of
# statically linked programs (Go's) record it there; newer dpkg also knows Static-Built-Using,
# which Debian 12's lintian does not.
built_using=""
needed=$(readelf -d "$pkg/usr/bin/pipe")
if [[ "$needed" != *libcrypto* ]] && grep -qa 'OpenSSL 3\.' "$pkg/usr/bin/pipe"; then
    built_using=$(dpkg-query -W -f='${source:Package} (= ${source:Version})' libssl-dev)
    say "OpenSSL is linked in: Built-Using: $built_using"
fi

(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: pipe
Version: $version
Architecture: $arch
Maintainer: pipe developers <pipe@packages.invalid>
Installed-Size: $size
Depends: ${shlibs:+$shlibs, }adduser
${built_using:+Built-Using: $built_using
}Recommends: docker.io | docker-ce, iptables
Suggests: prometheus-node-exporter, nginx
Section: devel
Priority: optional
Description: lean CI/CD loop for Docker hosts
 pipe polls the git branches of every project, builds a Docker image for each
 new commit, runs the tests inside it, pushes it to a registry and deploys it
 (compose, swarm, a command, or a webhook to another host), as one binary
 without a resident server: a systemd timer runs "pipe run" every minute.
 "pipe serve" is the deploy receiver on production hosts.
 .
 The units run as the "pipe" system user, in the "docker" group, with
 CAP_NET_ADMIN for the firewall of untrusted builds. They are installed but
 not enabled: edit /etc/pipe/pipeline.toml, then enable pipe.timer.
EOF
chmod 0644 "$pkg/DEBIAN/control"

mkdir -p "$out"
deb="$out/pipe_${version}_${arch}.deb"
say "building $deb: dpkg-deb --root-owner-group --build"
dpkg-deb --root-owner-group "-Z$compression" --build "$pkg" "$deb" >/dev/null
echo "$deb"
