"""A TCP relay on loopback that counts the bytes each way and can cut every
connection once a given number of bytes went from the server to the client
(to interrupt a pull mid-blob). A measuring tool for bench/store/run.py: it
forwards bytes unchanged and never parses HTTP."""

import socket
import threading


class ByteProxy:
    def __init__(self, target_port, cut_after_bytes=None):
        self.target_port = target_port
        self.cut_after_bytes = cut_after_bytes
        self.to_client = 0
        self.to_server = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self, cut_after_bytes=None):
        with self._lock:
            self.to_client = self.to_server = self.connections = 0
            self.cut_after_bytes = cut_after_bytes

    def stop(self):
        self._stopped = True
        self._listener.close()
        for s in list(self._sockets):
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source, sink, downstream):
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    if downstream:
                        if self.cut_after_bytes is not None:
                            room = self.cut_after_bytes - self.to_client
                            if room <= 0:
                                break
                            data = data[:room]
                        self.to_client += len(data)
                    else:
                        self.to_server += len(data)
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
