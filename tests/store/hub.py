"""A stand-in for the model hub, for `hearth pull`'s tests (tests/store/test_pull.py).

It answers the few requests a GGUF download makes, with the hub's paths and headers:

- `GET /api/models/ORG/REPO/tree/REV?recursive=true`: the file list, a JSON array of
  `{"type": "file", "path", "size", "oid", "lfs": {"oid": SHA256, "size", "pointerSize"}}`
  and `{"type": "directory", "path", ...}` entries, in pages of `page_size` entries joined
  by a `Link: <...>; rel="next"` header when `page_size` is set;
- `GET|HEAD /ORG/REPO/resolve/REV/PATH`: a 302 to the file's bytes under `/cdn/SHA256`
  (on this server, or on a second one standing for the CDN's host, `cdn_elsewhere`), with
  `X-Linked-Etag` (the quoted SHA-256), `X-Linked-Size` and `ETag`;
- `GET|HEAD /cdn/SHA256`: the bytes, with `Range: bytes=N-` answered 206 and
  `Content-Range` (416 past the end).

Switches for the tests: `cut_once` (the next body stops after half the file's bytes and
the connection is closed), `wrong_hash` (the hashes advertised are another file's),
`ignore_range` (answer 200 with the whole file whatever the Range), `token` (the API and
`resolve` want `Authorization: Bearer TOKEN`, else 401, as a gated repository). Every
request is logged (server, method, path, Range and whether it carried Authorization), and
`bytes_sent` counts body bytes.

Run on its own (`hub.py ORG/REPO/PATH=FILE ...`) it serves those files until interrupted.
"""

import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import urllib.parse

CHUNK = 1 << 20


class Hub:
    def __init__(self, repos, page_size=None, cdn_elsewhere=False):
        """`repos` maps "ORG/REPO" to {path in the repo: local file}."""
        self.repos = {}
        self.by_sha = {}
        for repo, files in repos.items():
            entries = {}
            for path, local in files.items():
                info = {"local": local, "size": os.path.getsize(local), "sha256": sha256_file(local)}
                entries[path] = info
                self.by_sha[info["sha256"]] = info
            self.repos[repo] = entries
        self.page_size = page_size
        self.cdn_elsewhere = cdn_elsewhere
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.cut_once = False
            self.wrong_hash = False
            self.ignore_range = False
            self.token = None
            self.log = []
            self.bytes_sent = 0

    def start(self):
        self.hub_server = self._serve("hub")
        self.cdn_server = self._serve("cdn")
        self.url = f"http://127.0.0.1:{self.hub_server.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn_server.server_address[1]}"
        return self

    def stop(self):
        for s in (self.hub_server, self.cdn_server):
            s.shutdown()
            s.server_close()

    def _serve(self, role):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.hub = self
        server.role = role
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def advertised_sha(self, info):
        if self.wrong_hash:
            return hashlib.sha256(b"not this file" + info["sha256"].encode()).hexdigest()
        return info["sha256"]

    def requests(self, role=None, method=None, path_part=""):
        with self.lock:
            return [r for r in self.log
                    if (role is None or r["role"] == role) and (method is None or r["method"] == method)
                    and path_part in r["path"]]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.answer(head=False)

    def do_HEAD(self):
        self.answer(head=True)

    def answer(self, head):
        hub = self.server.hub
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        with hub.lock:
            hub.log.append({
                "role": self.server.role,
                "method": self.command,
                "path": path,
                "range": self.headers.get("Range"),
                "authorization": self.headers.get("Authorization") is not None,
            })
        if path.startswith("/cdn/"):
            return self.send_file(path[len("/cdn/"):], head)
        if self.server.role != "hub":
            return self.send_status(404, "not found")
        if path.startswith("/api/models/"):
            return self.send_tree(path, urllib.parse.parse_qs(url.query), head)
        parts = path.lstrip("/").split("/", 4)
        if len(parts) == 5 and parts[2] == "resolve":
            return self.send_redirect(f"{parts[0]}/{parts[1]}", parts[4], head)
        self.send_status(404, "not found")

    def authorized(self):
        hub = self.server.hub
        if hub.token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {hub.token}":
            return True
        self.send_status(401, "Invalid credentials", {"X-Error-Code": "GatedRepo"})
        return False

    def send_status(self, code, message, headers=None):
        body = json.dumps({"error": message}).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_tree(self, path, query, head):
        hub = self.server.hub
        rest = path[len("/api/models/"):].split("/")
        if len(rest) < 4 or rest[2] != "tree":
            return self.send_status(404, "not found")
        repo = f"{rest[0]}/{rest[1]}"
        if repo not in hub.repos:
            return self.send_status(401 if hub.token is None else 404, "Repository not found")
        if not self.authorized():
            return
        recursive = query.get("recursive", ["false"])[0] in ("true", "1", "True")
        entries, dirs = [], set()
        for p, info in sorted(hub.repos[repo].items()):
            folders = p.split("/")[:-1]
            for i in range(1, len(folders) + 1):
                d = "/".join(folders[:i])
                if d not in dirs and (recursive or i == 1):
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": d})
            if not recursive and folders:
                continue
            sha = hub.advertised_sha(info)
            entries.append({
                "type": "file", "oid": hashlib.sha1(sha.encode()).hexdigest(), "size": info["size"],
                "path": p, "lfs": {"oid": sha, "size": info["size"], "pointerSize": 134},
            })
        start = int(query.get("cursor", ["0"])[0])
        headers = {}
        if hub.page_size:
            end = start + hub.page_size
            if end < len(entries):
                next_query = urllib.parse.urlencode({"recursive": str(recursive).lower(), "cursor": end})
                headers["Link"] = f'<{hub.url}{path}?{next_query}>; rel="next"'
            entries = entries[start:end]
        body = json.dumps(entries).encode()
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_redirect(self, repo, file, head):
        hub = self.server.hub
        info = hub.repos.get(repo, {}).get(file)
        if info is None:
            return self.send_status(404, "Entry not found", {"X-Error-Code": "EntryNotFound"})
        if not self.authorized():
            return
        sha = hub.advertised_sha(info)
        base = hub.cdn_url if hub.cdn_elsewhere else ""
        self.send_response(302)
        self.send_header("Location", f"{base}/cdn/{info['sha256']}?sig=test")
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(info["size"]))
        self.send_header("ETag", f'"{sha}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_file(self, sha, head):
        hub = self.server.hub
        info = hub.by_sha.get(sha)
        if info is None:
            return self.send_status(404, "no such object")
        size = info["size"]
        start, status = 0, 200
        ranged = self.headers.get("Range")
        if ranged and not hub.ignore_range:
            spec = ranged.strip().removeprefix("bytes=")
            first, _, last = spec.partition("-")
            start = int(first)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if last:
                return self.send_status(400, "only open ranges here")
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        if head:
            return
        with hub.lock:
            cut = hub.cut_once
            hub.cut_once = False
        stop = size // 2 if cut else size
        with open(info["local"], "rb") as f:
            f.seek(start)
            at = start
            while at < stop:
                chunk = f.read(min(CHUNK, stop - at))
                if not chunk:
                    break
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                    return
                at += len(chunk)
                with hub.lock:
                    hub.bytes_sent += len(chunk)
        if cut:
            # The connection drops mid-body, as a flaky network does.
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    repos = {}
    for arg in sys.argv[1:]:
        name, local = arg.split("=", 1)
        org, repo, path = name.split("/", 2)
        repos.setdefault(f"{org}/{repo}", {})[path] = local
    hub = Hub(repos).start()
    print(f"hub at {hub.url} (HF_ENDPOINT={hub.url})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
