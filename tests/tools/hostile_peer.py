#!/usr/bin/python3
"""A hostile peer for the network local tests: it claims, in the peer
protocol perch agents speak (GET /perch/v1/peer), to hold one blob, and
misbehaves when asked for it. Not a stand-in for perch: an adversary.

    hostile_peer.py --blob FILE --mode MODE [--device NAME] [--token TOKEN]

MODE: flip     the blob with one byte flipped in the middle (right length)
      oversize the blob and then more bytes than it has
      die      half the blob, then the connection is closed (killed mid-transfer)
      stall    half the blob, then nothing, connection held open
Prints its port on the first line of stdout once it listens; then one line
per blob request: "GET <range header or ->", or "REFUSED <auth header>"
when --token is set and the request does not carry it.
"""
import argparse
import hashlib
import http.server
import json
import socketserver
import sys
import time


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_handler(args, blob):
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def _json(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _authorized(self):
            given = self.headers.get("Authorization", "")
            if args.token and given != f"Bearer {args.token}":
                print(f"REFUSED {given or '-'}", flush=True)
                self._json(401, {"error": "bad peer token", "code": "Unauthenticated"})
                return False
            return True

        def do_GET(self):
            if not self._authorized():
                return
            if self.path == "/perch/v1/peer":
                port = self.server.server_port
                return self._json(200, {"device": args.device,
                                        "url": f"http://127.0.0.1:{port}",
                                        "grpc_address": "", "models": [],
                                        "blobs": [digest]})
            if not self.path.endswith("/blobs/" + digest):
                return self._json(404, {"error": "unknown", "code": "NotFound"})
            print(f"{self.command} {self.headers.get('Range') or '-'}", flush=True)
            start = 0
            status = 200
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
                status = 206
            body = blob[start:]
            if args.mode == "flip":
                body = bytearray(body)
                body[len(body) // 2] ^= 0xFF
                body = bytes(body)
            elif args.mode == "oversize":
                body = body + b"\0" * 4096
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range",
                                 f"bytes {start}-{len(blob) - 1}/{len(blob)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            if args.mode in ("die", "stall"):
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                if args.mode == "stall":
                    time.sleep(3600)
                self.close_connection = True
                return
            self.wfile.write(body)

        do_HEAD = do_GET

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--blob", required=True)
    parser.add_argument("--mode", required=True,
                        choices=["flip", "oversize", "die", "stall"])
    parser.add_argument("--device", default="hostile")
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    with open(args.blob, "rb") as f:
        blob = f.read()
    server = Server(("127.0.0.1", 0), make_handler(args, blob))
    print(server.server_port, flush=True)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
