"""A TCP fault proxy for tests of flapping links, on loopback: it sits
between the agent and a server (the MQTT broker, the hub) and, on a seeded
schedule, cuts the connections (a clean close or a reset), delays every
byte (latency, order kept), takes the link down for a while (new
connections are reset at once) or silent (a black hole: nothing passes and
nobody is told, as when a cable is pulled or a NAT forgets the flow).
Same seed, same schedule.

    proxy = FaultProxy(broker.port, seed=7, latency=0.5,
                       cut_every=(5, 60)).start()
    ... agent connects to proxy.port ...
    proxy.down(120)            # a link down for two minutes, now
    proxy.silence(10)          # a black hole for 10 s, then every
                               # connection reset (the flow is forgotten)
    proxy.lose_replies(b"POST /api/v1/enrol")  # the next such request
                               # reaches the server, its reply never returns
    proxy.close()

Threading: a thread accepts, two per connection forward (one per
direction), one runs the schedule; every public method is thread-safe."""

import heapq
import random
import socket
import struct
import threading
import time


def _reset(sock):
    """Closes with a TCP RST instead of a FIN. A close() alone would not
    do: while a forwarding thread is blocked in recv() on the socket, Linux
    keeps it open until that recv returns, so the peer would hear nothing
    (a silent black hole, not a reset). shutdown(SHUT_RD) wakes the reader
    without sending anything; the close after it then sends the RST."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    def __init__(self, target_port, seed=0, latency=0.0, cut_every=None,
                 reset_share=0.5, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.latency = latency
        self.cut_every = cut_every  # (min, max) seconds, or None: no cuts
        self.reset_share = reset_share
        self.random = random.Random(seed)
        self.cuts = 0
        self.resets = 0
        self.connections = 0
        self.refused = 0
        self.swallowed = 0  # reads lost in a black hole
        self.replies_lost = 0
        self._lose = None  # [request bytes, replies still to lose]
        self._down_until = 0.0
        self._silent_until = 0.0
        self._held = []  # connections accepted into a black hole
        self._lock = threading.Lock()
        self._pairs = []
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]

    @property
    def url(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        if self.cut_every:
            threading.Thread(target=self._schedule, daemon=True).start()
        return self

    def start_cuts(self, cut_every):
        """Starts cutting every (min, max) seconds, for a proxy made
        without cuts (so that a test's set-up could go through it)."""
        self.cut_every = cut_every
        threading.Thread(target=self._schedule, daemon=True).start()

    def is_down(self):
        return time.monotonic() < self._down_until

    def down(self, seconds):
        """Cuts every connection and refuses new ones for `seconds`."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
        self.cut(reset=True)

    def is_silent(self):
        return time.monotonic() < self._silent_until

    def silence(self, seconds):
        """Nothing passes either way for `seconds`, and nobody is told: the
        connections stay open, new ones are accepted and hear nothing. Then
        every connection is reset, as a NAT that forgot the flows answers
        the next packet; bytes dropped in between make a connection useless
        afterwards anyway."""
        with self._lock:
            self._silent_until = time.monotonic() + seconds

        def end():
            if not self._stop.wait(seconds):
                with self._lock:
                    held, self._held = self._held, []
                for sock in held:
                    _reset(sock)
                self.cut(reset=True)
        threading.Thread(target=end, daemon=True).start()

    def lose_replies(self, request_contains, count=1):
        """The next `count` requests whose bytes contain `request_contains`
        reach the server whole, and their replies never come back: the
        connection is reset as the reply starts, so the server has acted on
        the request by then (a link lost between a request and its answer,
        the case that tests whether a retry is safe)."""
        with self._lock:
            self._lose = [request_contains, count]

    def cut(self, reset=None):
        """Ends every connection now: reset (RST) or closed (FIN); None
        picks by the seeded share."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            if reset is None:
                reset = self.random.random() < self.reset_share
            self.cuts += 1
            self.resets += 1 if reset else 0
        for pair in pairs:
            for sock in pair:
                (_reset if reset else _close)(sock)

    def close(self):
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            _close(sock)
        self.cut(reset=False)

    def _schedule(self):
        while True:
            with self._lock:
                wait = self.random.uniform(*self.cut_every)
            if self._stop.wait(wait):
                return
            if not self.is_silent():  # a black hole tells nobody
                self.cut()

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.is_down():
                with self._lock:
                    self.refused += 1
                _reset(client)
                continue
            if self.is_silent():
                with self._lock:
                    self._held.append(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, server))
                self.connections += 1
            # Shared by both directions: a request seen on the way in
            # marks the reply on the way out to be lost.
            flow = {"lose_reply": False, "pair": (client, server)}
            for source, sink, inbound in ((client, server, True),
                                          (server, client, False)):
                threading.Thread(target=self._forward,
                                 args=(source, sink, flow, inbound),
                                 daemon=True).start()

    def _losing(self, flow, data, inbound):
        """Whether `data` is a reply to lose (and the connection with it);
        marks the flow when `data` is a request whose reply is to be lost."""
        with self._lock:
            if inbound:
                if self._lose and self._lose[1] > 0 and self._lose[0] in data:
                    self._lose[1] -= 1
                    flow["lose_reply"] = True
                return False
            if flow["lose_reply"]:
                self.replies_lost += 1
                return True
            return False

    def _forward(self, source, sink, flow, inbound):
        """Reads from source and writes to sink `latency` seconds later,
        in order (a delay line: a heap of (due, sequence, bytes))."""
        pending = []
        ready = threading.Condition()
        done = []

        def write():
            while True:
                with ready:
                    while not pending and not done:
                        ready.wait()
                    if not pending:
                        return
                    due, _, data = pending[0]
                    delay = due - time.monotonic()
                    if delay > 0:
                        ready.wait(delay)
                        continue
                    heapq.heappop(pending)
                if data is None:
                    _close(sink)
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        sequence = 0
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if data and self.is_silent():
                with self._lock:
                    self.swallowed += 1
                continue  # lost in the black hole
            if data and self._losing(flow, data, inbound):
                for sock in flow["pair"]:
                    _reset(sock)
                data = b""
            with ready:
                sequence += 1
                heapq.heappush(pending, (time.monotonic() + self.latency,
                                         sequence, data or None))
                ready.notify()
            if not data:
                break
        with ready:
            done.append(True)
            ready.notify()
