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

Organization listings, served from RECORD_FILE.org.json ({"org": NAME, "repos": [{"name",
"clone_url", "ssh_url", "default_branch", "archived", "fork", "pushed_at"}], "max_per_page": N}),
rewritten by the test between ticks; each forge gets its own documented shape:

- GitHub: GET /orgs/{org}/repos?type=&sort=&direction=&per_page=&page=
  https://docs.github.com/en/rest/repos/repos#list-organization-repositories
  (`sort` created, updated, pushed or full_name, `direction` asc or desc: `sort=pushed` lists by
  `pushed_at`, the other orders serve the file's order; per_page at most 100; `Link` with rel="next"/"last"; `ETag`, and `304 Not Modified` for a
  matching `If-None-Match`, https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate;
  `x-ratelimit-limit/-remaining/-used/-reset/-resource`)
- Gitea/Forgejo: GET /api/v1/orgs/{org}/repos?page=&limit=
  https://gitea.com/api/swagger#/organization/orgListRepos  (`Link`, `X-Total-Count`; no
  order can be asked for)
- GitLab: GET /api/v4/groups/{id}/projects?page=&per_page=&archived=&include_subgroups=&…
  https://docs.gitlab.com/api/groups/#list-projects  (`order_by` as documented, `sort` asc or
  desc: `order_by=last_activity_at` lists by `last_activity_at`, the others serve the file's
  order; `path`, `path_with_namespace`,
  `http_url_to_repo`, `ssh_url_to_repo`, `forked_from_project` on forks, `last_activity_at`;
  `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Total`, `X-Total-Pages`, `Link`;
  `RateLimit-Limit/-Remaining/-Reset`)

`max_per_page` stands for the server's own page cap (Gitea's `MAX_RESPONSE_ITEMS`, GitLab's
`max_per_page`), so a small organization still spans pages. While RECORD_FILE.org.json is
missing, listings answer 404.

Open pull requests, served from RECORD_FILE.pulls.json ({"OWNER/REPO": [{"number", "author"}]};
GitLab: the project's path), each forge in its documented shape, one page:

- GitHub: GET /repos/{owner}/{repo}/pulls?state=&head=&base=&sort=&direction=&per_page=&page=
  https://docs.github.com/en/rest/pulls/pulls#list-pull-requests  (`number`, `user.login`)
- Gitea/Forgejo: GET /api/v1/repos/{owner}/{repo}/pulls?state=&sort=&milestone=&labels=&poster=&page=&limit=
  https://gitea.com/api/swagger#/repository/repoListPullRequests  (`number`, `user.login`)
- GitLab: GET /api/v4/projects/{id}/merge_requests?state=&per_page=&page=&…
  https://docs.gitlab.com/api/merge_requests/#list-project-merge-requests  (`iid`, `author.username`;
  state `opened`, `closed`, `locked`, `merged`, `all`)

and one pull request from the same file (`PULL` below: GitHub and Gitea `…/pulls/N`, GitLab
`…/merge_requests/IID`, in the listing's shape; 404 for one not listed).

A hostile forge, for the attack tests (what pipe sends is still checked against the
documentation above; only the answers misbehave):
- "generate": {"count": N, "prefix": P, "clone_base": URL} appends N repositories named
  P-0 … P-(N-1) after "repos", each made only when its page is asked for (a million entries
  cost nothing until listed);
- "hostile_per_page": K serves K entries a page whatever page size was asked for (the `Link`
  header still names the size pipe asked for, so pipe's next request stays documented).

Every request is appended to RECORD_FILE as one JSON line:
{"status": CODE, "method": ..., "path": ..., "body": ..., "error": REASON or null,
"if_none_match": HEADER or null}.
The port is written to PORT_FILE once listening. While RECORD_FILE.redirect exists
({"status": 3xx, "origin": "http://HOST:PORT" or "", "replace": [OLD, NEW] or absent}), a request
that the documentation accepts (auth included: the credential got here) and whose path contains
OLD is answered with that redirect instead, to ORIGIN + the path with OLD replaced by NEW
(recorded with error "redirected"): how a forge answers for a renamed repository, or how a
hostile or misconfigured one could. While RECORD_FILE.limit exists, every
request gets the rate-limited answer it describes (GitHub: 403 or 429 with `Retry-After` or
`x-ratelimit-remaining: 0`, https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).
"""

import hashlib
import json
import re
import sys
import time
from urllib.parse import parse_qs, urlsplit
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

    def record(self, status, error, body=None):
        with open(RECORD, "a") as f:
            f.write(json.dumps({"status": status, "method": self.command, "path": self.path, "body": body, "error": error,
                                "if_none_match": self.headers.get("If-None-Match")}) + "\n")

    def answer(self, status, error, body=None):
        self.record(status, error, body)
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

    def redirect(self):
        """The redirect RECORD.redirect describes for this path, or None."""
        try:
            with open(RECORD + ".redirect") as f:
                spec = json.load(f)
        except FileNotFoundError:
            return None
        old, new = spec.get("replace") or ("", "")
        if old not in self.path:
            return None
        return spec["status"], spec.get("origin", "") + self.path.replace(old, new, 1)

    def answer_redirect(self, target, body=None):
        status, location = target
        self.record(status, "redirected", body)
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

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
        if self.command == "GET" and LISTING[KIND]["path"].match(urlsplit(self.path).path):
            self.listing()
            return
        if self.command == "GET" and PULLS[KIND]["path"].match(urlsplit(self.path).path):
            self.pulls()
            return
        if self.command == "GET" and PULL[KIND]["path"].match(urlsplit(self.path).path):
            self.pull()
            return
        status, error, body = self.check()
        target = self.redirect()
        if status == 201 and target:
            return self.answer_redirect(target, body)
        self.answer(status, error, body)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def documented(self, params):
        """The query of a request whose credentials, headers and parameters are as the forge
        documents them; None when it was refused (answered)."""
        name, value = SPEC["auth"]
        if self.headers.get(name) != value:
            return self.answer(401, "wrong or missing " + name)
        for k, v in SPEC["headers"].items():
            if self.headers.get(k) != v:
                return self.answer(400, "header %s must be %s" % (k, v))
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        unknown = set(query) - params
        if unknown:
            return self.answer(400, "undocumented query parameters %s" % sorted(unknown))
        return query

    def send_json(self, value):
        payload = json.dumps(value, ensure_ascii=False).encode()
        self.record(200, None)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def pulls(self):
        spec = PULLS[KIND]
        query = self.documented(spec["params"])
        if query is None:
            return
        if query.get("state", [spec["states"][0]])[0] not in spec["states"]:
            return self.answer(422, "state must be one of %s" % spec["states"])
        size = int(query.get(spec["size"], ["30"])[0])
        if size < 1 or size > spec["max_size"]:
            return self.answer(422, "page size must be 1 to %d" % spec["max_size"])
        pulls = open_pulls()
        repo = spec["path"].match(urlsplit(self.path).path).group(1).replace("%2F", "/")
        if repo not in pulls:
            return self.answer(404, "no such repository")
        self.send_json([spec["render"](p) for p in pulls[repo]])

    def pull(self):
        if self.documented(PULL[KIND]["params"]) is None:
            return
        found = PULL[KIND]["path"].match(urlsplit(self.path).path)
        repo, number = found.group(1).replace("%2F", "/"), int(found.group(2))
        listed = [p for p in open_pulls().get(repo, []) if p["number"] == number]
        if not listed:
            return self.answer(404, "no such pull request")
        self.send_json(PULLS[KIND]["render"](listed[0]))

    def listing(self):
        spec = LISTING[KIND]
        url = urlsplit(self.path)
        name, value = SPEC["auth"]
        if self.headers.get(name) != value:
            return self.answer(401, "wrong or missing " + name)
        for k, v in SPEC["headers"].items():
            if self.headers.get(k) != v:
                return self.answer(400, "header %s must be %s" % (k, v))
        target = self.redirect()
        if target:
            return self.answer_redirect(target)
        query = parse_qs(url.query, keep_blank_values=True)
        unknown = set(query) - spec["params"]
        if unknown:
            return self.answer(400, "undocumented query parameters %s" % sorted(unknown))
        if any(len(v) != 1 for v in query.values()):
            return self.answer(400, "a query parameter given twice")
        try:
            page = int(query.get("page", ["1"])[0])
            per_page = int(query.get(spec["size"], [str(spec["default_size"])])[0])
        except ValueError:
            return self.answer(400, "page and page size must be integers")
        if page < 1 or per_page < 1 or per_page > spec["max_size"]:
            return self.answer(422, "page size must be 1 to %d" % spec["max_size"])
        try:
            with open(RECORD + ".org.json") as f:
                org = json.load(f)
        except FileNotFoundError:
            return self.answer(404, "no such organization")
        if spec["path"].match(url.path).group(1) != spec["org_in_path"](org["org"]):
            return self.answer(404, "no such organization")
        per_page = min(per_page, org.get("max_per_page", per_page))
        order = spec["order"](query)
        if order == "invalid":
            return self.answer(422, "an order the documentation does not list")
        repos = org["repos"]
        generate = org.get("generate")
        count = generate["count"] if generate else 0
        total = len(repos) + count
        # Ordered by last push, the generated block (all pushed at GENERATED_PUSH) sits among
        # the listed repositories by that time; stable for equal times, as the forge's own order.
        before, after = list(repos), []
        if order in ("asc", "desc"):
            ranked = sorted(repos, key=lambda r: r.get("pushed_at", GENERATED_PUSH), reverse=order == "desc")
            first = (lambda r: r.get("pushed_at", GENERATED_PUSH) > GENERATED_PUSH) if order == "desc" else \
                (lambda r: r.get("pushed_at", GENERATED_PUSH) < GENERATED_PUSH)
            before = [r for r in ranked if first(r)]
            after = [r for r in ranked if not first(r)]

        def listed(i):
            if i < len(before):
                return before[i]
            if i >= len(before) + count:
                return after[i - len(before) - count]
            name = "%s-%d" % (generate["prefix"], i - len(before))
            return {"name": name, "clone_url": generate["clone_base"] + name + ".git", "default_branch": "main",
                    "pushed_at": GENERATED_PUSH}

        served = org.get("hostile_per_page") or per_page
        pages = max(1, (total + served - 1) // served)
        first = (page - 1) * served
        items = [spec["render"](org["org"], listed(i)) for i in range(first, min(first + served, total))]
        payload = json.dumps(items).encode()
        etag = 'W/"%s"' % hashlib.sha256(payload).hexdigest()[:32]
        base = "http://127.0.0.1:%d%s?" % (self.server.server_address[1], url.path)
        def link(n):
            q = dict((k, v[0]) for k, v in query.items())
            q["page"] = str(n)
            q[spec["size"]] = str(per_page)
            return base + "&".join("%s=%s" % kv for kv in q.items())
        links = []
        if page < pages:
            links.append('<%s>; rel="next"' % link(page + 1))
        links.append('<%s>; rel="last"' % link(pages))
        headers = {"ETag": etag, "Link": ", ".join(links)}
        reset = str(int(time.time()) + 3600)
        if KIND.startswith("github"):
            headers.update({"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999", "x-ratelimit-used": "1",
                            "x-ratelimit-reset": reset, "x-ratelimit-resource": "core"})
        elif KIND == "gitea":
            headers["X-Total-Count"] = str(total)
        else:
            headers.update({"X-Page": str(page), "X-Per-Page": str(per_page), "X-Total": str(total),
                            "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages else "",
                            "RateLimit-Limit": "2000", "RateLimit-Remaining": "1999", "RateLimit-Reset": reset})
        matched = self.headers.get("If-None-Match") == etag
        status = 304 if matched else 200
        self.record(status, None)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if matched:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def github_repo(org, r):
    return {"id": abs(hash(r["name"])) % 100000, "name": r["name"], "full_name": "%s/%s" % (org, r["name"]),
            "private": False, "owner": {"login": org}, "clone_url": r["clone_url"], "ssh_url": r.get("ssh_url", ""),
            "default_branch": r.get("default_branch", "main"), "archived": r.get("archived", False),
            "disabled": False, "fork": r.get("fork", False), "pushed_at": r.get("pushed_at", "2026-01-01T00:00:00Z"),
            "updated_at": r.get("pushed_at", "2026-01-01T00:00:00Z")}


def gitea_repo(org, r):
    repo = github_repo(org, r)
    repo.pop("pushed_at")
    repo.pop("disabled")
    repo["empty"] = False
    return repo


def gitlab_project(org, r):
    p = {"id": abs(hash(r["name"])) % 100000, "name": r["name"], "path": r["name"],
         "path_with_namespace": "%s/%s" % (org, r["name"]), "http_url_to_repo": r["clone_url"],
         "ssh_url_to_repo": r.get("ssh_url", ""), "default_branch": r.get("default_branch", "main"),
         "archived": r.get("archived", False), "last_activity_at": r.get("pushed_at", "2026-01-01T00:00:00Z")}
    if r.get("fork"):
        p["forked_from_project"] = {"id": 1, "path_with_namespace": "upstream/" + r["name"]}
    return p


GENERATED_PUSH = "2026-01-01T00:00:00Z"


def github_order(query):
    """GitHub: `sort` one of created, updated, pushed, full_name (default created); `direction`
    asc or desc (default asc for full_name, else desc). Only `pushed` is modelled ("asc" or
    "desc"); the others are served in the file's order (None)."""
    sort = query.get("sort", ["created"])[0]
    direction = query.get("direction", ["asc" if sort == "full_name" else "desc"])[0]
    if sort not in ("created", "updated", "pushed", "full_name") or direction not in ("asc", "desc"):
        return "invalid"
    return direction if sort == "pushed" else None


def gitlab_order(query):
    """GitLab: `order_by` one of id, name, path, created_at, updated_at, similarity,
    last_activity_at, star_count (default created_at); `sort` asc or desc (default desc). Only
    `last_activity_at` is modelled."""
    order_by = query.get("order_by", ["created_at"])[0]
    sort = query.get("sort", ["desc"])[0]
    known = ("id", "name", "path", "created_at", "updated_at", "similarity", "last_activity_at", "star_count")
    if order_by not in known or sort not in ("asc", "desc"):
        return "invalid"
    return sort if order_by == "last_activity_at" else None


SEGMENT = r"([A-Za-z0-9_.-]+)"
GITHUB_LISTING = {"path": re.compile(r"^/orgs/" + SEGMENT + "/repos$"), "size": "per_page", "default_size": 30,
                  "max_size": 100, "params": {"type", "sort", "direction", "per_page", "page"},
                  "order": github_order, "render": github_repo, "org_in_path": lambda org: org}
LISTING = {
    "github": GITHUB_LISTING,
    "github-enterprise": dict(GITHUB_LISTING, path=re.compile(r"^/api/v3/orgs/" + SEGMENT + "/repos$")),
    "gitea": {"path": re.compile(r"^/api/v1/orgs/" + SEGMENT + "/repos$"), "size": "limit", "default_size": 30,
              "max_size": 50, "params": {"page", "limit"}, "order": lambda query: None, "render": gitea_repo, "org_in_path": lambda org: org},
    "gitlab": {"path": re.compile(r"^/api/v4/groups/([A-Za-z0-9_.%-]+)/projects$"), "size": "per_page",
               "default_size": 20, "max_size": 100,
               "params": {"page", "per_page", "archived", "visibility", "order_by", "sort", "search", "simple",
                          "owned", "starred", "with_issues_enabled", "with_merge_requests_enabled", "with_shared",
                          "include_subgroups", "min_access_level", "with_custom_attributes", "with_security_reports"},
               "order": gitlab_order, "render": gitlab_project, "org_in_path": lambda org: org.replace("/", "%2F")},
}


def open_pulls():
    try:
        with open(RECORD + ".pulls.json") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def github_pull(p):
    return {"number": p["number"], "state": "open", "title": "pull request %d" % p["number"],
            "user": {"login": p["author"], "type": "User"}, "head": {"ref": "topic", "sha": "0" * 40},
            "body": p.get("body")}


def gitlab_mr(p):
    return {"iid": p["number"], "state": "opened", "title": "merge request %d" % p["number"],
            "author": {"username": p["author"]}, "sha": "0" * 40}


REPO = r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)"
GITHUB_PULLS = {"path": re.compile(r"^/repos/" + REPO + "/pulls$"), "size": "per_page", "max_size": 100,
                "params": {"state", "head", "base", "sort", "direction", "per_page", "page"},
                "states": ["open", "closed", "all"], "render": github_pull}
PULLS = {
    "github": GITHUB_PULLS,
    "github-enterprise": dict(GITHUB_PULLS, path=re.compile(r"^/api/v3/repos/" + REPO + "/pulls$")),
    "gitea": {"path": re.compile(r"^/api/v1/repos/" + REPO + "/pulls$"), "size": "limit", "max_size": 50,
              "params": {"state", "sort", "milestone", "labels", "poster", "page", "limit"},
              "states": ["open", "closed", "all"], "render": github_pull},
    "gitlab": {"path": re.compile(r"^/api/v4/projects/([A-Za-z0-9_.-]+(?:%2F[A-Za-z0-9_.-]+)+)/merge_requests$"),
               "size": "per_page", "max_size": 100,
               "params": {"state", "per_page", "page", "order_by", "sort", "milestone", "labels", "author_id",
                          "author_username", "scope", "source_branch", "target_branch", "search", "view"},
               "states": ["opened", "closed", "locked", "merged", "all"], "render": gitlab_mr},
}

# One pull request (what pipe asks for when the listing did not name its author):
# - GitHub: GET /repos/{owner}/{repo}/pulls/{pull_number}
#   https://docs.github.com/en/rest/pulls/pulls#get-a-pull-request
# - Gitea/Forgejo: GET /api/v1/repos/{owner}/{repo}/pulls/{index} (swagger `repoGetPullRequest`)
# - GitLab: GET /api/v4/projects/{id}/merge_requests/{merge_request_iid}
#   https://docs.gitlab.com/api/merge_requests/#get-single-mr
PULL = {
    "github": {"path": re.compile(r"^/repos/" + REPO + r"/pulls/([0-9]+)$"), "params": set()},
    "github-enterprise": {"path": re.compile(r"^/api/v3/repos/" + REPO + r"/pulls/([0-9]+)$"), "params": set()},
    "gitea": {"path": re.compile(r"^/api/v1/repos/" + REPO + r"/pulls/([0-9]+)$"), "params": set()},
    "gitlab": {"path": re.compile(r"^/api/v4/projects/([A-Za-z0-9_.-]+(?:%2F[A-Za-z0-9_.-]+)+)/merge_requests/([0-9]+)$"),
               "params": {"render_html", "include_diverged_commits_count", "include_rebase_in_progress"}},
}


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os

os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
