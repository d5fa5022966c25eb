#!/usr/bin/python3
"""A small HTTP/1.1 server on loopback for the HTTP client's unit tests.

Prints its port on the first line of stdout once it listens, then serves
until killed. With --tls DIR it makes a CA and a server certificate for
127.0.0.1 (not localhost), and a client certificate, with the openssl CLI
into DIR (ca.pem, server.pem, server.key, client.pem, client.key) and serves
HTTPS; --mtls also requires the client's certificate.

Routes:
  GET  /port               the client's TCP port (keep-alive: same port twice)
  GET  /stream?pieces=N&size=S
                           N pieces of S bytes ('a'..), flushed one by one
  GET  /headers            two Set-Cookie headers and X-One
  GET  /redirect?n=K       K redirects, then /port
  GET  /status?code=C      answers C with a JSON error body
  GET  /stall-head         answers nothing for 30 s
  GET  /stall-body         sends a head with Content-Length: 10 and 3 bytes, then waits
  GET  /short              a Content-Length larger than the body, then closes
  HEAD /anything           the head of the GET, Content-Length included
  POST|PUT|PATCH|DELETE /echo
                           {"method", "length", "sha256", "chunked", "content_type", "expect"}
"""
import argparse
import hashlib
import http.server
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.parse


def make_certificates(directory):
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    key, csr = os.path.join(directory, "server.key"), os.path.join(directory, "server.csr")
    cert, ext = os.path.join(directory, "server.pem"), os.path.join(directory, "server.ext")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "2", "-subj", "/CN=perch test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext)
    # A client certificate for mutual TLS, signed by the same CA.
    client_key, client_csr = os.path.join(directory, "client.key"), os.path.join(directory, "client.csr")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", client_key, "-out", client_csr,
        "-subj", "/CN=perch test client")
    run("x509", "-req", "-in", client_csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", os.path.join(directory, "client.pem"), "-days", "2")
    return cert, key


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route(self):
        url = urllib.parse.urlparse(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        if url.path == "/port":
            return self.answer(200, str(self.client_address[1]).encode())
        if url.path == "/stream":
            pieces, size = int(query.get("pieces", "4")), int(query.get("size", "1000"))
            self.send_response(200)
            self.send_header("Content-Length", str(pieces * size))
            self.end_headers()
            if self.command == "HEAD":
                return
            for i in range(pieces):
                self.wfile.write(bytes([ord("a") + i % 26]) * size)
                self.wfile.flush()
                time.sleep(0.01)
            return
        if url.path == "/headers":
            return self.answer(200, b"ok", extra=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                                  ("X-One", "  spaced  ")])
        if url.path == "/redirect":
            left = int(query.get("n", "1"))
            target = "/port" if left <= 1 else f"/redirect?n={left - 1}"
            return self.answer(302, b"", extra=[("Location", target)])
        if url.path == "/status":
            code = int(query.get("code", "404"))
            return self.answer(code, json.dumps({"error": "as asked", "code": "NotFound"}).encode(),
                               "application/json")
        if url.path == "/stall-head":
            time.sleep(30)
            return
        if url.path == "/stall-body":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"abc")
            self.wfile.flush()
            time.sleep(30)
            return
        if url.path == "/drop":
            # Answers as if keeping the connection, then cuts it (a link
            # that flapped between two calls): a FIN, or with reset=1 a RST.
            self.answer(200, str(self.client_address[1]).encode())
            self.wfile.flush()
            if query.get("reset") == "1":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if url.path == "/drop-next":
            # Keeps the connection, and resets it when the next request's
            # head is in, before its body: the client is still sending.
            self.drop_next = True
            return self.answer(200, str(self.client_address[1]).encode())
        if url.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"only this")
            self.wfile.flush()
            self.close_connection = True
            return
        return self.answer(404, b"no such route")

    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def reset_if_asked(self):
        if not getattr(self, "drop_next", False):
            return False
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
        self.close_connection = True
        return True

    def echo(self):
        if self.reset_if_asked():
            return
        chunked = self.headers.get("Transfer-Encoding", "") == "chunked"
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if not chunked else b""
        answer = {
            "method": self.command,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "chunked": chunked,
            "content_type": self.headers.get("Content-Type"),
            "expect": self.headers.get("Expect"),
            "authorization": self.headers.get("Authorization"),
        }
        self.answer(200, json.dumps(answer).encode(), "application/json")

    do_POST = do_PUT = do_PATCH = do_DELETE = echo


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", metavar="DIR")
    parser.add_argument("--mtls", action="store_true", help="with --tls: require a client "
                        "certificate signed by the CA (DIR/client.pem, DIR/client.key)")
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.tls:
        cert, key = make_certificates(args.tls)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if args.mtls:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(os.path.join(args.tls, "ca.pem"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
