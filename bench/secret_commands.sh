#!/usr/bin/env bash
# How often a secret command runs: one `{ command = [...] }` reference used by a build arg, a
# test variable and three deploy targets of one project, plus a second command used by one
# target only, through `pipe run` on a new commit, twice. The command is a wrapper that appends
# a line to a file each time it runs (and sleeps 0.3 s, like a password manager asking its agent),
# so the file counts invocations. Invocations are a count, not a timing: the debug binary serves
# (target/debug/pipe, built when missing; PIPE_BIN overrides it). A build given a secret needs
# BuildKit: Debian's docker.io 20.10 CLI (/usr/bin/docker, PIPE_DOCKER overrides it). Writes its
# section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
bin="${PIPE_BIN:-$root/target/debug/pipe}"
[ -x "$bin" ] || cargo build --quiet
say() { printf '[bench] %s\n' "$*" >&2; }
base_image="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"
export PIPE_DOCKER="${PIPE_DOCKER:-/usr/bin/docker}"
work="$(mktemp -d)"
image="pipe-bench-secrets-$$"
trap 'docker image ls -q "$image" | sort -u | xargs -r docker image rm -f >/dev/null 2>&1; rm -rf "$work"' EXIT

for name in shared only-b; do
    printf '#!/bin/sh\necho run >> "%s/%s.calls"\nsleep 0.3\necho "value-of-%s"\n' "$work" "$name" "$name" >"$work/$name"
    chmod +x "$work/$name"
done
git -C "$work" init -q -b main src
printf 'FROM %s\nRUN --mount=type=secret,id=TOKEN test -s /run/secrets/TOKEN\nCOPY app.txt /app.txt\n' "$base_image" >"$work/src/Dockerfile"
echo one >"$work/src/app.txt"
printf 'image = "%s"\ntest = "test -n \\"$TOKEN\\""\n' "$image" >"$work/src/.pipe.toml"
git -C "$work/src" add -A
git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qm one
git clone -q --bare "$work/src" "$work/app.git"
shared="{ command = [\"$work/shared\"] }"
{
    cat <<TOML
[pipe]
workspace = "$work/work"

[project.app]
repo = "file://$work/app.git"
branches = ["main"]
build_args = { TOKEN = $shared }
test_env = { TOKEN = $shared }
TOML
    for target in a b c; do
        extra=""
        [ "$target" = b ] && extra=", ONLY_B = { command = [\"$work/only-b\"] }"
        printf '\n[[project.app.deploy]]\nname = "%s"\nbranches = ["main"]\ncommand = { argv = ["true"] }\nenv = { TOKEN = %s%s }\n' \
            "$target" "$shared" "$extra"
    done
} >"$work/pipeline.toml"
export PIPE_CONFIG="$work/pipeline.toml" PIPE_STATE="$work/state/state.toml"
uses=$(grep -o "$work/shared" "$work/pipeline.toml" | wc -l)
count() { [ -f "$work/$1.calls" ] && wc -l <"$work/$1.calls" || echo 0; }
start=$(date +%s.%N)
"$bin" -q run >/dev/null
first=$(echo "$(date +%s.%N) - $start" | bc)
s1=$(count shared); b1=$(count only-b)
echo two >"$work/src/app.txt"
git -C "$work/src" -c user.name=bench -c user.email=bench@pipe.invalid commit -qam two
git -C "$work/src" push -q "$work/app.git" main
"$bin" -q run >/dev/null
s2=$(count shared); b2=$(count only-b)
say "shared: $uses references, $s1 invocation(s) in the first run, $s2 after the second"

section=$(cat <<MD
<!-- secret-commands start -->
## Secret commands: invocations per \`pipe run\` (\`bench/secret_commands.sh\`)

$(date -u +%F), $(nproc) cores shared with other work, $("$PIPE_DOCKER" --version), BuildKit through that CLI.
One project, each \`pipe run\` building, testing and deploying a new commit to three command targets.
The secret commands are wrappers that append a line to a file per invocation and sleep 0.3 s.

| secret command | references in the pipeline file | invocations in the first \`pipe run\` | in both runs (two processes) |
|---|---|---|---|
| \`shared\` (build arg, test variable, targets a, b, c) | $uses | **$s1** | $s2 |
| \`only-b\` (target b) | 1 | **$b1** | $b2 |

Once per process for each distinct argv. Run once per reference instead, the shared command would
have run $uses times in a run (computed, not measured: $(echo "$uses * 0.3" | bc) s of waiting on the store
against 0.3 s). The first \`pipe run\` took ${first%??????} s from start to its last deploy.
<!-- secret-commands end -->
MD
)
results="$root/bench/RESULTS.md"
if grep -q '<!-- secret-commands start -->' "$results"; then
    python3 - "$results" "$section" <<'PY'
import sys, re
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- secret-commands start -->.*?<!-- secret-commands end -->", lambda _: section, text, flags=re.S)
open(path, "w").write(text)
PY
else
    printf '\n%s\n' "$section" >>"$results"
fi
say "wrote the secret-commands section of bench/RESULTS.md"
