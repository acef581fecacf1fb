#!/usr/bin/env bash
# What keeping a secret out of the image costs: `pipe build` of one unchanged commit (warm
# cache, so the difference is the builder's and pipe's own work) three ways, side by side in one
# hyperfine run:
#   legacy:          the legacy builder (the 28.x CLI, no buildx), no secret build arg;
#   buildkit:        BuildKit built into Debian's 20.10 CLI (`/usr/bin/docker`), no secret;
#   buildkit+secret: the same with a secret build arg, mounted for one `RUN` step.
# The commit carries two Dockerfiles (the legacy builder cannot read `RUN --mount`); each
# configuration names its own. Needs the Docker engine, both CLIs and hyperfine. Uses
# target/release/pipe (built when missing; PIPE_BIN overrides it) and writes its section of
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/release/pipe}"
[ -x "$bin" ] || cargo build --quiet --release
say() { printf '[bench] %s\n' "$*" >&2; }
command -v hyperfine >/dev/null || { say "needs hyperfine (apt-get install hyperfine)"; exit 1; }
legacy_cli="${PIPE_LEGACY_DOCKER:-/usr/local/bin/docker}"
kit_cli="${PIPE_BUILDKIT_DOCKER:-/usr/bin/docker}"
[ -x "$legacy_cli" ] && [ -x "$kit_cli" ] || { say "needs $legacy_cli and $kit_cli"; exit 1; }
base_image="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
work="$(mktemp -d)"
image="pipe-bench-secrets-$$"
trap 'docker image ls -q "$image" | sort -u | xargs -r docker image rm -f >/dev/null 2>&1; rm -rf "$work"' EXIT

git -C "$work" init -q -b main src
printf 'FROM %s\nCOPY app.txt /app.txt\nRUN echo step > /step\n' "$base_image" >"$work/src/Dockerfile.plain"
printf 'FROM %s\nCOPY app.txt /app.txt\nRUN --mount=type=secret,id=TOKEN test -s /run/secrets/TOKEN && echo step > /step\n' \
    "$base_image" >"$work/src/Dockerfile.secret"
echo hello >"$work/src/app.txt"
printf 'image = "%s"\ntest = "true"\n' "$image" >"$work/src/.pipe.toml"
git -C "$work/src" add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qm bench
git clone -q --bare "$work/src" "$work/app.git"
config() { # NAME DOCKERFILE [EXTRA]
    mkdir -p "$work/$1"
    cat >"$work/$1/pipeline.toml" <<TOML
[pipe]
workspace = "$work/$1/work"
[project.app]
repo = "file://$work/app.git"
branches = ["main"]
dockerfile = "$2"
$3
TOML
}
config legacy Dockerfile.plain ""
config buildkit Dockerfile.plain ""
config secret Dockerfile.secret 'build_args = { TOKEN = { env = "BENCH_TOKEN" } }'
run() { # NAME CLI
    echo "env PIPE_DOCKER=$2 BENCH_TOKEN=bench-secret-value PIPE_CONFIG=$work/$1/pipeline.toml PIPE_STATE=$work/$1/state/state.toml $bin -q build app"
}
for pair in "legacy $legacy_cli" "buildkit $kit_cli" "secret $kit_cli"; do $(run $pair) >/dev/null; done
hyperfine --warmup 2 --runs 15 --export-json "$work/secrets.json" \
    -n legacy "$(run legacy "$legacy_cli")" -n buildkit "$(run buildkit "$kit_cli")" \
    -n buildkit+secret "$(run secret "$kit_cli")" >&2
median_ms() { jq -r ".results[$1].median * 1000 | . * 10 | round / 10" "$work/secrets.json"; }
ratio() { jq -r "(.results[$1].median / .results[$2].median) | . * 100 | round / 100" "$work/secrets.json"; }
l=$(median_ms 0); k=$(median_ms 1); s=$(median_ms 2)
leaked=$(docker history --no-trunc "$image:latest" | grep -c bench-secret-value || true)

section=$(cat <<MD
<!-- secrets start -->
## Secret build args: \`pipe build\` of an unchanged commit by builder (\`bench/secrets.sh\`)

$(date -u +%F), $(nproc) cores shared with other work (load average $(cut -d' ' -f1 /proc/loadavg)
at the end), $(docker version --format 'engine {{.Server.Version}}'); legacy: \`$("$legacy_cli" --version)\`;
BuildKit: \`$("$kit_cli" --version)\` with \`DOCKER_BUILDKIT=1\`. Hyperfine medians of 15 runs,
one run; every build step a cache hit. Shortcut: a \`file://\` remote and a two-step image, so
the figures are the builders' fixed cost, not a real dependency install.

| builder | secret build arg | median | against legacy |
|---|---|---|---|
| legacy | none | $l ms | 1.00 |
| BuildKit (the CLI's own) | none | $k ms | $(ratio 1 0) |
| BuildKit (the CLI's own) | mounted for one step | $s ms | **$(ratio 2 0)** |

The mount against BuildKit without it: $(ratio 2 1). Lines of \`docker history --no-trunc\` of
the image holding the secret: $leaked.
<!-- secrets end -->
MD
)
# shellcheck source=bench/section.sh
. "$root/bench/section.sh"
write_section secrets "$section"
echo "$section"
