import queue
import threading

import pytest

from services.tiering.batching import read_ahead_chunks


def test_chunks_keep_order_and_size():
    chunks = list(read_ahead_chunks(iter(range(1234)), 500, linger=0.5))
    assert [x for c in chunks for x in c] == list(range(1234))
    assert all(len(c) <= 500 for c in chunks)


def test_a_lock_step_client_gets_its_answer_without_filling_a_chunk():
    requests: queue.Queue = queue.Queue()

    def stream():
        while (item := requests.get()) is not None:
            yield item

    chunks = read_ahead_chunks(stream(), 500)
    got = []
    for i in range(3):               # send one, wait for its chunk, send the next
        requests.put(i)
        got.append(next(chunks))
    requests.put(None)
    assert got == [[0], [1], [2]] and list(chunks) == []


def test_the_reader_never_runs_more_than_two_chunks_ahead():
    pulled = []

    def stream():
        for i in range(10_000):
            pulled.append(i)
            yield i

    chunks = read_ahead_chunks(stream(), 100)
    first = next(chunks)
    threading.Event().wait(0.3)      # let the reader run as far as it may
    assert len(first) <= 100 and len(pulled) <= len(first) + 2 * 100 + 1
    chunks.close()


def test_a_broken_stream_raises_after_what_arrived():
    def stream():
        yield 1
        yield 2
        raise RuntimeError("cancelled")

    chunks = read_ahead_chunks(stream(), 10, linger=0.5)
    assert next(chunks) == [1, 2]
    with pytest.raises(RuntimeError):
        next(chunks)


def test_concurrent_unary_calls_share_a_chunk_and_each_gets_its_answer():
    from concurrent.futures import ThreadPoolExecutor

    from services.tiering.service import Coalescer

    gate, chunks = threading.Event(), []

    def run_chunk(requests):
        chunks.append(list(requests))
        gate.wait(5)
        return [r * 10 if r != 3 else None for r in requests]

    coalescer = Coalescer(run_chunk)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(coalescer.submit, 0)
        while not chunks:                          # the first call runs alone...
            threading.Event().wait(0.01)
        rest = [pool.submit(coalescer.submit, i) for i in range(1, 6)]
        while len(coalescer._pending) < 5:         # ...the others queue behind it
            threading.Event().wait(0.01)
        gate.set()
        assert first.result() == 0 and [f.result() for f in rest] == [10, 20, None, 40, 50]
    assert chunks == [[0], [1, 2, 3, 4, 5]]


def test_a_failed_chunk_fails_each_caller():
    from services.tiering.service import Coalescer

    def run_chunk(requests):
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        Coalescer(run_chunk).submit(1)
