"""A minimal RFC 6455 WebSocket server side, stdlib only: handshake, text frames out, control in.

Only what a push feed needs: the server sends unmasked text frames; from the client it reads
frames only to answer pings, honour a close, and otherwise ignores data. Each connection has a
bounded outbound queue drained by the connection's own thread, so a broadcast never blocks on a
slow client; a client that falls `max_queue` frames behind is dropped, as java-tron's event
queue drops messages beyond `sendqueuelength` (java-tron docs: docs/architecture/event.md, native queue).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import queue
import socket
import threading
from collections.abc import Mapping
from io import BufferedIOBase

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # fixed by RFC 6455 section 1.3
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_INCOMING = 64 * 1024  # we expect only pings and close frames; anything bigger is abuse
CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG = 1002, 1009


def handshake_problem(method: str, headers: Mapping[str, str]) -> str | None:
    """Why the request is not a valid WebSocket upgrade, or None. `headers` have lower-case names."""
    if method != "GET":
        return "WebSocket upgrade must be a GET"
    if headers.get("upgrade", "").strip().lower() != "websocket":
        return "expected Upgrade: websocket"
    if "upgrade" not in {token.strip().lower() for token in headers.get("connection", "").split(",")}:
        return "expected Connection: Upgrade"
    if headers.get("sec-websocket-version", "").strip() != "13":
        return "only Sec-WebSocket-Version 13 is supported"
    try:
        if len(base64.b64decode(headers.get("sec-websocket-key", ""), validate=True)) != 16:
            return "Sec-WebSocket-Key must be 16 bytes, base64"
    except ValueError:
        return "Sec-WebSocket-Key must be 16 bytes, base64"
    return None


def handshake_reply(key: str) -> bytes:
    accept = base64.b64encode(hashlib.sha1((key.strip() + GUID).encode()).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode("latin-1")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    length = len(payload)
    if length < 126:
        head = bytes([0x80 | opcode, length])
    elif length < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + length.to_bytes(8, "big")
    return head + payload


class ProtocolError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class WsConnection:
    def __init__(self, sock: socket.socket, rfile: BufferedIOBase, max_queue: int = 10_000) -> None:
        self._sock = sock
        self._rfile = rfile
        self._queue: queue.Queue[bytes] = queue.Queue(max_queue)
        self._send_lock = threading.Lock()
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def send(self, frame: bytes) -> None:
        """Queue an encoded frame; never blocks."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.abort()

    def abort(self) -> None:
        """Close the TCP connection abruptly, without a close frame (a crashed or cut-off peer)."""
        self._closed.set()
        with contextlib.suppress(OSError):  # already gone
            self._sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        """Serve until closed: this thread writes, a helper thread reads."""
        threading.Thread(target=self._read_loop, name="sim-ws-reader", daemon=True).start()
        try:
            while not self._closed.is_set():
                try:
                    frame = self._queue.get(timeout=0.25)
                except queue.Empty:
                    continue
                self._write(frame)
        except OSError:
            pass  # the peer went away
        finally:
            self.abort()

    def _write(self, data: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(data)

    def _read_loop(self) -> None:
        try:
            while not self._closed.is_set():
                frame = self._read_frame()
                if frame is None:
                    break  # EOF without a close frame
                opcode, payload = frame
                if opcode == OP_PING:
                    self._write(encode_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    # Echo the status code, then close: the closing handshake of RFC 6455 5.5.1.
                    self._write(encode_frame(OP_CLOSE, payload[:2]))
                    break
                # Text, binary, continuation and pong frames carry nothing this feed uses.
        except ProtocolError as exc:
            with contextlib.suppress(OSError):
                self._write(encode_frame(OP_CLOSE, exc.code.to_bytes(2, "big")))
        except (OSError, ValueError):
            pass  # reset, or the socket was closed under us by abort()
        finally:
            self.abort()

    def _read_exact(self, count: int) -> bytes | None:
        data = self._rfile.read(count) if count else b""
        return data if data is not None and len(data) == count else None

    def _read_frame(self) -> tuple[int, bytes] | None:
        head = self._read_exact(2)
        if head is None:
            return None
        opcode, masked, length = head[0] & 0x0F, head[1] & 0x80, head[1] & 0x7F
        if length >= 126:
            extended = self._read_exact(2 if length == 126 else 8)
            if extended is None:
                return None
            length = int.from_bytes(extended, "big")
        if not masked:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR)  # clients must mask every frame
        if length > MAX_INCOMING or (opcode >= OP_CLOSE and length > 125):
            raise ProtocolError(CLOSE_TOO_BIG if opcode < OP_CLOSE else CLOSE_PROTOCOL_ERROR)
        mask = self._read_exact(4)
        payload = self._read_exact(length)
        if mask is None or payload is None:
            return None
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
