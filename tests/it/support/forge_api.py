#!/usr/bin/env python3
"""A strict stand-in for one forge's commit-status API, for the integration tests.

Usage: forge_api.py KIND TOKEN RECORD_FILE PORT_FILE [PORT]

Implements only the documented endpoint, and answers 4xx (recorded with the reason) to any
request whose method, path, headers, auth scheme, JSON body or state name differs from the
documentation:

- GitHub: POST /repos/{owner}/{repo}/statuses/{sha}
  https://docs.github.com/en/rest/commits/statuses#create-a-commit-status
  (Authorization: Bearer TOKEN; Accept: application/vnd.github+json;
  X-GitHub-Api-Version: 2022-11-28; body: state, target_url, description, context;
  state one of error, failure, pending, success; 201 Created)
- Gitea/Forgejo: POST /api/v1/repos/{owner}/{repo}/statuses/{sha}
  https://gitea.com/api/swagger#/repository/repoCreateStatus  (CreateStatusOption;
  Authorization: token TOKEN; state one of pending, success, error, failure, warning)
- GitHub Enterprise ("github-enterprise"): the same under the API base /api/v3
  https://docs.github.com/en/enterprise-server@latest/rest/quickstart
- GitLab: POST /api/v4/projects/{id}/statuses/{sha}
  https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit
  (PRIVATE-TOKEN: TOKEN; state one of pending, running, success, failed, canceled, skipped;
  name, target_url, description)

Every request is appended to RECORD_FILE as one JSON line:
{"status": CODE, "path": ..., "body": ..., "error": REASON or null}.
The port is written to PORT_FILE once listening. While RECORD_FILE.limit exists, every
request gets the rate-limited answer it describes (GitHub: 403 or 429 with `Retry-After` or
`x-ratelimit-remaining: 0`, https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).
"""

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KIND, TOKEN, RECORD, PORT_FILE = sys.argv[1:5]
PORT = int(sys.argv[5]) if len(sys.argv) > 5 else 0

SHA = r"[0-9a-f]{40}"
SPEC = {
    "github": {
        "path": re.compile(r"^/repos/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/statuses/" + SHA + "$"),
        "auth": ("Authorization", "Bearer " + TOKEN),
        "headers": {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
        "fields": {"state", "target_url", "description", "context"},
        "states": {"error", "failure", "pending", "success"},
        "name": "context",
    },
    "gitea": {
        "path": re.compile(r"^/api/v1/repos/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/statuses/" + SHA + "$"),
        "auth": ("Authorization", "token " + TOKEN),
        "headers": {},
        "fields": {"state", "target_url", "description", "context"},
        "states": {"pending", "success", "error", "failure", "warning"},
        "name": "context",
    },
    "gitlab": {
        "path": re.compile(r"^/api/v4/projects/([0-9]+|[A-Za-z0-9_.-]+(%2F[A-Za-z0-9_.-]+)+)/statuses/" + SHA + "$"),
        "auth": ("PRIVATE-TOKEN", TOKEN),
        "headers": {},
        "fields": {"state", "ref", "name", "context", "target_url", "description", "coverage", "pipeline_id"},
        "states": {"pending", "running", "success", "failed", "canceled", "skipped"},
        "name": "name",
    },
}
SPEC["github-enterprise"] = dict(SPEC["github"], path=re.compile(r"^/api/v3/repos/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/statuses/" + SHA + "$"))
SPEC = SPEC[KIND]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, error, body=None):
        with open(RECORD, "a") as f:
            f.write(json.dumps({"status": status, "method": self.command, "path": self.path, "body": body, "error": error}) + "\n")
        payload = json.dumps({"message": error} if error else {"id": 1, "state": (body or {}).get("state")}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def check(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length) if length else b""
        if self.command != "POST":
            return 405, "method must be POST", None
        if not SPEC["path"].match(self.path):
            return 404, "not the documented path", None
        name, value = SPEC["auth"]
        if self.headers.get(name) != value:
            return 401, "wrong or missing " + name, None
        for k, v in SPEC["headers"].items():
            if self.headers.get(k) != v:
                return 400, "header %s must be %s" % (k, v), None
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return 415, "Content-Type must be application/json", None
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, "body is not JSON", None
        if not isinstance(body, dict):
            return 422, "body must be an object", body
        unknown = set(body) - SPEC["fields"]
        if unknown:
            return 422, "unknown fields %s" % sorted(unknown), body
        if body.get("state") not in SPEC["states"]:
            return 422, "state %r is not one of %s" % (body.get("state"), sorted(SPEC["states"])), body
        if not isinstance(body.get(SPEC["name"]), str) or not body[SPEC["name"]]:
            return 422, "missing " + SPEC["name"], body
        if len(body.get("description", "")) > 140:
            return 422, "description longer than 140 characters", body
        return 201, None, body

    def do_POST(self):
        # RECORD.limit, while it exists, holds a rate-limited answer: {"status": …, "headers": {…}}.
        try:
            with open(RECORD + ".limit") as f:
                limit = json.load(f)
        except FileNotFoundError:
            limit = None
        if limit:
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            with open(RECORD, "a") as f:
                f.write(json.dumps({"status": limit["status"], "method": self.command, "path": self.path, "body": None, "error": "rate limited"}) + "\n")
            self.send_response(limit["status"])
            for k, v in limit["headers"].items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.answer(*self.check())

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os

os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
