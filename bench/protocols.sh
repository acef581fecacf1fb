#!/usr/bin/env bash
# No-op `pipe poll` against a `git ls-remote` shell loop over the same repositories, one row per
# protocol, every server a real one on 127.0.0.1 started here (and stopped on exit):
#
#   file://   the bare repositories themselves
#   git://    git-daemon (git's own, run directly) --export-all --base-path=REPOS
#   http://   nginx -> fcgiwrap (unix socket) -> git http-backend (CGI), HTTP/1.1
#   https://  the same nginx server block with TLS: a per-run self-signed EC certificate for
#             127.0.0.1, trusted by pipe and git through SSL_CERT_FILE and GIT_SSL_CAINFO
#             (OpenSSL, under both reqwest's native-tls and git's libcurl, reads SSL_CERT_FILE)
#   ssh://    OpenSSH's sshd -D on a free high port with a per-run host key and one authorized
#             client key; pipe and the loop both check the host key (StrictHostKeyChecking=yes)
#
# 20 repositories x 50 branches on one host, plus an HTTPS row with 200 repositories. Wall time
# is hyperfine's median; CPU (user+sys) and peak RSS are medians of 3 runs measured with
# wait4(2)'s rusage (microseconds, unlike /usr/bin/time's 10 ms ticks), client side only: the
# loop's figure covers bash and every git and ssh child it waits for; servers are other processes.
#
# usage: bench/protocols.sh [PIPE_BINARY]   (bench/run.sh calls it; alone, it also replaces the
# protocol table in bench/RESULTS.md). PIPE_BENCH_RUNS (default 5) bounds the hyperfine runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
say() { printf '[bench] %s\n' "$*" >&2; }
need() { # need COMMAND PACKAGE: apt-get install PACKAGE when COMMAND is missing
    command -v "$1" >/dev/null || [ -x "$1" ] || {
        say "installing $2"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null
    }
}
need hyperfine hyperfine; need /usr/bin/time time; need jq jq; need git git; need nginx nginx-light
need /usr/sbin/fcgiwrap fcgiwrap; need /usr/sbin/sshd openssh-server; need openssl openssl; need python3 python3

pipe="${1:-}"
if [ -z "$pipe" ]; then
    say "building the release binary"
    cargo build --quiet --release
    pipe="$root/target/release/pipe"
fi
runs="${PIPE_BENCH_RUNS:-5}"
w="$root/bench/work/proto"
rm -rf "$w"
mkdir -p "$w/repos" "$w/repos200" "$w/home/.ssh" "$w/srv"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@pipe.invalid GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@pipe.invalid
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

make_repo() { # DIR BRANCHES: a bare repo, BRANCHES branches + main on one commit, refs packed
    local dir="$1" n="$2" tree base
    git init --quiet --bare "$dir"
    tree=$(git -C "$dir" hash-object -t tree -w --stdin </dev/null)
    base=$(git -C "$dir" commit-tree "$tree" -m base)
    { for i in $(seq 1 "$n"); do echo "create refs/heads/branch-$i $base"; done
      echo "create refs/heads/main $base"; } | git -C "$dir" update-ref --stdin
    git -C "$dir" pack-refs --all
}
say "fixtures: 20 repos x 50 branches, 200 repos x 50 branches"
for r in $(seq 1 20); do make_repo "$w/repos/r$r.git" 49; done
for r in $(seq 1 200); do make_repo "$w/repos200/r$r.git" 49; done

say "git daemon"
git_port=$(free_port)
"$(git --exec-path)/git-daemon" --export-all --reuseaddr --listen=127.0.0.1 --port="$git_port" \
    --base-path="$w" "$w" >/dev/null 2>&1 &
pids+=($!)

say "nginx + fcgiwrap + git http-backend, HTTP and HTTPS (self-signed certificate)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$w/srv/tls.key" -out "$w/srv/tls.crt" 2>/dev/null
# Its own process group: the four pre-forked children outlive a TERM to the parent.
setsid /usr/sbin/fcgiwrap -c 4 -s "unix:$w/srv/fcgi.sock" &
pids+=("-$!")
http_port=$(free_port); https_port=$(free_port)
cat >"$w/srv/nginx.conf" <<NGINX
user root;
worker_processes 1;
pid $w/srv/nginx.pid;
error_log $w/srv/error.log;
events { worker_connections 512; }
http {
    access_log off;
    keepalive_requests 10000;
    server {
        listen 127.0.0.1:$http_port;
        listen 127.0.0.1:$https_port ssl;
        ssl_certificate $w/srv/tls.crt;
        ssl_certificate_key $w/srv/tls.key;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $(git --exec-path)/git-http-backend;
            fastcgi_param GIT_PROJECT_ROOT $w;
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO \$uri;
            fastcgi_param GIT_PROTOCOL \$http_git_protocol;
            fastcgi_pass unix:$w/srv/fcgi.sock;
        }
    }
}
NGINX
nginx -p "$w/srv" -c "$w/srv/nginx.conf" -g 'daemon off;' &
pids+=($!)

say "sshd with a per-run host key and one authorized client key"
ssh-keygen -q -t ed25519 -N '' -f "$w/srv/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$w/home/.ssh/id_ed25519"
cp "$w/home/.ssh/id_ed25519.pub" "$w/srv/authorized_keys"
mkdir -p /run/sshd
ssh_port=$(free_port)
cat >"$w/srv/sshd_config" <<SSHD
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $w/srv/host_key
AuthorizedKeysFile $w/srv/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile none
MaxSessions 64
MaxStartups 100
SSHD
/usr/sbin/sshd -D -e -f "$w/srv/sshd_config" 2>"$w/srv/sshd.log" &
pids+=($!)
echo "[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$w/srv/host_key.pub")" >"$w/home/.ssh/known_hosts"
for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$ssh_port) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$https_port) 2>/dev/null && break
    sleep 0.1
done

user=$(id -un)
export HOME="$w/home" SSL_CERT_FILE="$w/srv/tls.crt" GIT_SSL_CAINFO="$w/srv/tls.crt"
export GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$w/home/.ssh/known_hosts -i $w/home/.ssh/id_ed25519"
url_for() { # PROTOCOL DIR REPO
    case "$1" in
        file) echo "file://$w/$2/$3.git" ;;
        git) echo "git://127.0.0.1:$git_port/$2/$3.git" ;;
        http) echo "http://127.0.0.1:$http_port/$2/$3.git" ;;
        https) echo "https://127.0.0.1:$https_port/$2/$3.git" ;;
        ssh) echo "ssh://$user@127.0.0.1:$ssh_port$w/$2/$3.git" ;;
    esac
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# rusage CMD...: "wall_s user_s sys_s maxrss_kb" of CMD and the children it waited for.
rusage() {
    python3 -c 'import os, subprocess, sys, time
t = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, ru = os.wait4(p.pid, 0)
print("%.4f %.4f %.4f %d" % (time.monotonic() - t, ru.ru_utime, ru.ru_stime, ru.ru_maxrss))' "$@"
}
rows=""
measure() { # LABEL PROTOCOL DIR COUNT RUNS
    local label="$1" proto="$2" dir="$3" count="$4" n="$5" d="$w/t-$2-$4"
    mkdir -p "$d"
    : >"$d/pipeline.toml"; : >"$d/urls"
    for r in $(seq 1 "$count"); do
        local url; url=$(url_for "$proto" "$dir" "r$r")
        echo "$url" >>"$d/urls"
        printf '[project.r%s]\nrepo = "%s"\nbranches = ["**"]\n' "$r" "$url" >>"$d/pipeline.toml"
        [ "$proto" = ssh ] && printf 'auth = { ssh_key = "%s" }\n' "$w/home/.ssh/id_ed25519" >>"$d/pipeline.toml"
        echo >>"$d/pipeline.toml"
    done
    local penv=(env PIPE_CONFIG="$d/pipeline.toml" PIPE_STATE="$d/state.toml")
    "${penv[@]}" "$pipe" poll -q >/dev/null || { say "$label: the first pipe poll failed"; "${penv[@]}" "$pipe" poll; exit 1; }
    "${penv[@]}" "$pipe" poll -q >/dev/null
    local loop="while read -r u; do git ls-remote \"\$u\" >/dev/null; done <$d/urls"
    bash -c "$loop" || { say "$label: the git ls-remote loop failed"; exit 1; }
    say "$label: hyperfine, $n runs each"
    hyperfine --shell=none --warmup 1 --runs "$n" --export-json "$d/t.json" \
        -n "pipe poll" "${penv[*]} $pipe poll -q" -n "git ls-remote loop" "bash -c '$loop'" >&2
    for who in pipe loop; do
        : >"$d/$who.time"
        for _ in 1 2 3; do
            if [ "$who" = pipe ]; then
                rusage "${penv[@]}" "$pipe" poll -q >>"$d/$who.time"
            else
                rusage bash -c "$loop" >>"$d/$who.time"
            fi
        done
    done
    local pm lm ratio pcpu lcpu cratio prss
    pm=$(jq -r '.results[0].median * 1000 | . * 10 | round / 10' "$d/t.json")
    lm=$(jq -r '.results[1].median * 1000 | . * 10 | round / 10' "$d/t.json")
    ratio=$(jq -r '(.results[0].median / .results[1].median) * 100 | round / 100' "$d/t.json")
    pcpu=$(awk '{printf "%.1f\n", ($2 + $3) * 1000}' "$d/pipe.time" | median)
    lcpu=$(awk '{printf "%.1f\n", ($2 + $3) * 1000}' "$d/loop.time" | median)
    cratio=$(awk "BEGIN {printf \"%.2f\", ($lcpu > 0) ? $pcpu / $lcpu : 0}")
    prss=$(awk '{print $4}' "$d/pipe.time" | median)
    rows+="| $label | $pm ms | $lm ms | **$ratio** | $pcpu ms | $lcpu ms | **$cratio** | $(awk "BEGIN {printf \"%.1f\", $prss / 1024}") MB |"$'\n'
}
measure "file://" file repos 20 "$runs"
measure "git://" git repos 20 "$runs"
measure "http://" http repos 20 "$runs"
measure "https://" https repos 20 "$runs"
measure "ssh://" ssh repos 20 "$runs"
measure "https://, 200 repos" https repos200 200 "$(( runs < 3 ? runs : 3 ))"

table="$w/table.md"
cat >"$table" <<MD
## No-op poll over every protocol: 20 repos x 50 branches on one host (127.0.0.1)

\`bench/protocols.sh\` (run by \`bench/run.sh\`), $(date -u +%Y-%m-%d), $(nproc) cores shared with other work (load
average $(cut -d' ' -f1 /proc/loadavg) at the end). Wall: hyperfine medians. CPU (user+sys) and peak RSS: medians of 3
runs, wait4(2) rusage, client side only. Servers: git-daemon; nginx $(nginx -v 2>&1 | cut -d/ -f2) + fcgiwrap +
git http-backend (HTTP/1.1, TLS with a self-signed certificate); OpenSSH $(ssh -V 2>&1 | cut -d_ -f2 | cut -d, -f1) sshd. The loop is
\`git ls-remote URL\` per repository ($(git --version | cut -d' ' -f3), protocol v2; ssh without connection sharing).

| remote | \`pipe poll\` | \`git ls-remote\` loop | wall ratio (≤ 0.5) | pipe CPU | loop CPU | CPU ratio (≤ 0.25) | pipe peak RSS (< 20 MB) |
|---|---|---|---|---|---|---|---|
$rows
MD
cat "$table"
results="$root/bench/RESULTS.md"
if [ -z "${1:-}" ] && [ -f "$results" ]; then
    python3 - "$results" "$table" <<'PY'
import re, sys
results, table = sys.argv[1], open(sys.argv[2]).read().rstrip() + "\n"
text = open(results).read()
pattern = re.compile(r"## No-op poll over every protocol.*?(?=\n## |\Z)", re.S)
text = pattern.sub(lambda _: table.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + table
open(results, "w").write(text)
PY
    say "updated the protocol table in $results"
fi
