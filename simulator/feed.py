"""The /ws block feed: java-tron event-plugin blockTrigger JSON, pushed over a WebSocket.

Real nodes have no WebSocket (java-tron maintainers in tronprotocol/java-tron#5776 and #5811);
this is what a self-run node's event subscription
relayed over one would carry, so the product can be tested against a push source. Per canonical
block one message, field order as the 2021 testnet fixture plus `parentHash` (java-tron PR
#6294) and `removed` (v4.8.2, PR #6833):

    {"timeStamp", "triggerName": "blockTrigger", "blockNumber", "blockHash", "parentHash",
     "transactionSize", "latestSolidifiedBlockNumber", "removed", "transactionList": [txIDs]}

On a fork the replaced blocks come first, newest first, with "removed": true, then the new
branch oldest first. There is no replay: a client sees only blocks made while it is connected,
like the fire-and-forget event queue. `drop_every` closes every connection abruptly on a timer
so clients' reconnect paths get exercised.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from io import BufferedIOBase

from .chain import Heights
from .model import Block
from .render import dumps
from .websocket import OP_TEXT, WsConnection, encode_frame


def block_trigger(block: Block, solid: int, removed: bool) -> dict[str, object]:
    return {
        "timeStamp": block.timestamp,
        "triggerName": "blockTrigger",
        "blockNumber": block.number,
        "blockHash": block.block_id,
        "parentHash": block.parent_hash,
        "transactionSize": len(block.txs),
        "latestSolidifiedBlockNumber": solid,
        "removed": removed,
        "transactionList": [tx.tx_id for tx in block.txs],
    }


class BlockFeed:
    def __init__(self, solid_lag: int, head: int | None = None, drop_every: float = 0.0) -> None:
        self._solid_lag = solid_lag
        self._lock = threading.Lock()
        self._clients: set[WsConnection] = set()
        # The solidified number last announced; it never goes back, even in a fork.
        self._solid = max(head - solid_lag, 0) if head is not None else 0
        self._drop_every = drop_every
        self._wake = threading.Event()  # a settings change restarts the drop timer
        self._stopped = False
        self._sent = 0
        self._connections = 0
        self._dropped = 0
        threading.Thread(target=self._drop_loop, name="sim-ws-dropper", daemon=True).start()

    # -- chain events (a ChainStore listener; calls come in chain order) -----------------------

    def on_chain(self, removed: Sequence[Block], added: Sequence[Block], heights: Heights) -> None:
        messages = [block_trigger(block, self._solid, True) for block in removed]
        for block in added:
            self._solid = max(self._solid, block.number - self._solid_lag)
            messages.append(block_trigger(block, self._solid, False))
        with self._lock:
            clients = list(self._clients)
        if not clients:
            return
        frames = [encode_frame(OP_TEXT, dumps(message)) for message in messages]  # once, for all
        for client in clients:
            for frame in frames:
                client.send(frame)
        with self._lock:
            self._sent += len(frames) * len(clients)

    # -- connections ---------------------------------------------------------------------------

    def serve(self, sock: socket.socket, rfile: BufferedIOBase, handshake: bytes) -> None:
        """Answer the upgrade with `handshake` and run the connection until it closes (in the
        HTTP server's connection thread). The client is registered before the handshake goes
        out, so a block made right after the client sees the 101 is never missed."""
        client = WsConnection(sock, rfile)
        with self._lock:
            self._clients.add(client)
            self._connections += 1
        try:
            sock.sendall(handshake)  # before run(): queued frames are written only by run()
            client.run()
        except OSError:
            pass  # gone during the handshake
        finally:
            with self._lock:
                self._clients.discard(client)

    def drop_all(self) -> int:
        with self._lock:
            clients = list(self._clients)
            self._dropped += len(clients)
        for client in clients:
            client.abort()
        return len(clients)

    def set_drop_every(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("drop_every must be >= 0 (0 = never)")
        self._drop_every = seconds
        self._wake.set()

    def view(self) -> dict[str, object]:
        with self._lock:
            return {
                "clients": len(self._clients),
                "drop_every": self._drop_every,
                "connections": self._connections,
                "messages_sent": self._sent,
                "dropped": self._dropped,
            }

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self.drop_all()

    def _drop_loop(self) -> None:
        while not self._stopped:
            every = self._drop_every
            if self._wake.wait(every if every > 0 else None):
                self._wake.clear()  # new settings: start the period again
                continue
            self.drop_all()
