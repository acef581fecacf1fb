#!/usr/bin/env bash
# Regenerates the committed completions/ and man/ from the CLI definition.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/pipe
mkdir -p completions man
"$bin" generate completions bash >completions/pipe.bash
"$bin" generate completions zsh >completions/_pipe
"$bin" generate completions fish >completions/pipe.fish
rm -f man/*.1
"$bin" generate man man
echo "regenerated completions/ and man/" >&2
