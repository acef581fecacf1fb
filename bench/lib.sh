# Shared by the benchmark scripts that deploy through a real nginx (bench/zero_downtime.sh,
# bench/push_to_traffic.sh): sourced, never run. Sets `root` and `pipe` (the release binary,
# built here unless PIPE_BIN names one) and defines the helpers below.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
say() { printf '[bench] %s\n' "$*" >&2; }
if [ -z "${PIPE_BIN:-}" ]; then
    say "building the release binary"
    cargo build --quiet --release
fi
pipe="${PIPE_BIN:-$root/target/release/pipe}"
base="${PIPE_TEST_BASE_IMAGE:-pipe-busybox:latest}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx_conf DIR [EXTRA]: an nginx.conf in DIR that keeps everything in DIR and includes the
# server blocks `pipe generate nginx` wrote to DIR/pipe.conf, plus the EXTRA lines.
nginx_conf() {
    local n="$1" extra="${2:-}"
    cat > "$n/nginx.conf" <<NGX
worker_processes 1;
pid $n/nginx.pid;
events {}
http {
    access_log off;
    client_body_temp_path $n/body; proxy_temp_path $n/proxy; fastcgi_temp_path $n/fastcgi;
    uwsgi_temp_path $n/uwsgi; scgi_temp_path $n/scgi;
    include $n/pipe.conf;
$extra
}
NGX
}

# remove_deployment NAME...: the containers and networks of these compose projects, and the
# images pipe built for the project NAME (the first).
remove_deployment() {
    local p ids nets imgs
    for p in "$@"; do
        ids="$(docker ps -aq --filter "label=com.docker.compose.project=$p")"
        [ -n "$ids" ] && docker rm -f $ids >/dev/null
        nets="$(docker network ls -q --filter "label=com.docker.compose.project=$p")"
        [ -n "$nets" ] && docker network rm $nets >/dev/null
    done
    imgs="$(docker image ls -q --filter "label=pipe.project=$1" | sort -u)"
    [ -n "$imgs" ] && docker image rm -f $imgs >/dev/null 2>&1 || true
}
