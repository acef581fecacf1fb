# Sourced by the benchmark scripts: `write_section NAME TEXT` puts TEXT (which starts with
# `<!-- NAME start -->` and ends with `<!-- NAME end -->`) into bench/RESULTS.md in place of the
# section of that name, or at the end when there is none yet.
write_section() {
    local name="$1" section="$2" results
    results="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/RESULTS.md"
    if grep -q "<!-- $name start -->" "$results"; then
        python3 - "$results" "$name" "$section" <<'PY'
import sys, re
path, name, section = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
pattern = re.compile(f"<!-- {re.escape(name)} start -->.*?<!-- {re.escape(name)} end -->", re.S)
open(path, "w").write(pattern.sub(lambda _: section, text))
PY
    else
        printf '\n%s\n' "$section" >>"$results"
    fi
}
