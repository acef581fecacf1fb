"""A real smart-HTTP git server for tests: `git http-backend` behind Python's HTTP server.

usage: git_http_server.py PROJECT_ROOT PORT_FILE [USER:PASSWORD]
Listens on 127.0.0.1 (a free port, written to PORT_FILE). With USER:PASSWORD, requests without
exactly that Basic credential get 401. With GIT_HTTP_LOG set, every request's method and path
is appended to that file, one line each. With GIT_HTTP_REDIRECT set, while the file it names
exists and holds `METHOD ORIGIN` (METHOD `*` for any), a request of that method that passed
the credential check is answered 307 to ORIGIN + its path instead.
"""
import base64
import http.server
import os
import subprocess
import sys

root, port_file = sys.argv[1], sys.argv[2]
expected = None
if len(sys.argv) > 3:
    expected = "Basic " + base64.b64encode(sys.argv[3].encode()).decode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.backend(b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.backend(self.rfile.read(length))

    def backend(self, body_in):
        if os.environ.get("GIT_HTTP_LOG"):
            with open(os.environ["GIT_HTTP_LOG"], "a") as f:
                f.write("%s %s\n" % (self.command, self.path))
        if expected is not None and self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            with open(os.environ.get("GIT_HTTP_REDIRECT", "/nonexistent")) as f:
                method, origin = f.read().split()
            if method in ("*", self.command):
                self.send_response(307)
                self.send_header("Location", origin + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        except FileNotFoundError:
            pass
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=root, GIT_HTTP_EXPORT_ALL="1", REQUEST_METHOD=self.command,
                   PATH_INFO=path, QUERY_STRING=query, REMOTE_ADDR="127.0.0.1",
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), CONTENT_LENGTH=str(len(body_in)))
        out = subprocess.run(["git", "http-backend"], env=env, input=body_in, capture_output=True).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
