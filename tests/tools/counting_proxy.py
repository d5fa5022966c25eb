#!/usr/bin/python3
"""A loopback HTTP proxy in front of a registry that counts what the
registry sends: the network local tests and benchmark measure with it how
many blob bytes left the registry (the WAN link of a location).

    counting_proxy.py UPSTREAM_URL

Prints its port on the first line of stdout once it listens, then forwards
every request to UPSTREAM_URL (streaming, any method, Location headers
rewritten to the proxy) until killed. GET /_proxy/stats answers
{"blob_bytes": N, "blob_requests": [[path, range or null, bytes sent], ...]}
and POST /_proxy/reset zeroes them.
"""
import http.client
import http.server
import json
import socketserver
import sys
import threading
import urllib.parse

LOCK = threading.Lock()
STATS = {"blob_bytes": 0, "blob_requests": []}


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None  # urllib.parse.SplitResult

    def log_message(self, *args):
        pass

    def _answer_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _forward(self):
        if self.path == "/_proxy/stats":
            with LOCK:
                return self._answer_json(200, STATS)
        if self.path == "/_proxy/reset":
            with LOCK:
                STATS["blob_bytes"] = 0
                STATS["blob_requests"] = []
            return self._answer_json(200, {})
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection")}
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port,
                                                timeout=60)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            self.send_response(answer.status)
            chunked = False
            for key, value in answer.getheaders():
                lower = key.lower()
                if lower in ("connection", "keep-alive"):
                    continue
                if lower == "transfer-encoding":
                    chunked = True
                    continue
                if lower == "location":
                    value = value.replace(f"{self.upstream.scheme}://{self.upstream.netloc}",
                                          f"http://127.0.0.1:{self.server.server_port}")
                self.send_header(key, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = 0
            if self.command != "HEAD":
                while True:
                    piece = answer.read(1 << 16)
                    if not piece:
                        break
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    else:
                        self.wfile.write(piece)
                    sent += len(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            if self.command == "GET" and "/blobs/sha256:" in self.path:
                with LOCK:
                    STATS["blob_bytes"] += sent
                    STATS["blob_requests"].append([self.path, self.headers.get("Range"), sent])
        finally:
            connection.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


def main():
    Handler.upstream = urllib.parse.urlsplit(sys.argv[1])
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
