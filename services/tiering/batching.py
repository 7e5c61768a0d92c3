"""Chunks from a request stream without reading it ahead unboundedly.

A reader thread pulls requests into a bounded queue (two chunks): when the
evaluator falls behind, the queue fills, the reader blocks, and gRPC's flow
control stops the client. Chunks are cut at ``size`` or when the stream
pauses (``linger``), so a client that sends one request and waits for its
answer is never left waiting for a chunk to fill.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def read_ahead_chunks(items: Iterable[T], size: int, linger: float = 0.002) -> Iterator[list[T]]:
    buffer: queue.Queue = queue.Queue(maxsize=2 * size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # the call was cancelled or the stream broke
            put(_Failed(exc))
            return
        put(_END)

    threading.Thread(target=pump, name="batch-read-ahead", daemon=True).start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            chunk = [item]
            deadline = time.monotonic() + linger
            ended = failed = None
            while len(chunk) < size:
                try:
                    item = buffer.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        item = buffer.get(timeout=left)
                    except queue.Empty:
                        break
                if item is _END:
                    ended = True
                    break
                if isinstance(item, _Failed):
                    failed = item
                    break
                chunk.append(item)
            yield chunk
            if failed is not None:
                raise failed.error
            if ended:
                return
    finally:
        stop.set()
