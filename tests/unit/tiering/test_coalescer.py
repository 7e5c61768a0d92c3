"""The unary Coalescer: concurrent calls share chunks, each gets its own answer."""
from __future__ import annotations

import threading

import pytest

from services.tiering.service import Coalescer


def test_a_call_alone_runs_at_once_on_its_own_thread():
    seen = []
    coalescer = Coalescer(lambda batch: seen.append((threading.get_ident(), list(batch))) or [x * 2 for x in batch])
    assert coalescer.submit(21) == 42
    assert seen == [(threading.get_ident(), [21])]


def test_concurrent_calls_each_get_their_own_answer_and_share_chunks():
    started, release = threading.Event(), threading.Event()
    chunks = []

    def run(batch):
        chunks.append(list(batch))
        if len(chunks) == 1:          # hold the first chunk until the others queue up behind it
            started.set()
            release.wait(5)
        return [f"answer-{x}" for x in batch]

    coalescer = Coalescer(run, max_chunk=3)
    answers = {}

    def call(x):
        answers[x] = coalescer.submit(x)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=call, args=(x,)) for x in range(1, 8)]
    for t in others:
        t.start()
    while len(coalescer._pending) < 7:   # all seven are waiting behind the running chunk
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *others]:
        t.join(5)
    assert answers == {x: f"answer-{x}" for x in range(8)}
    assert chunks[0] == [0] and sorted(x for c in chunks[1:] for x in c) == list(range(1, 8))
    assert all(len(c) <= 3 for c in chunks) and len(chunks) == 1 + 3   # 7 waiting calls in chunks of 3


def test_after_a_failed_chunk_the_next_call_runs():
    calls = []

    def run(batch):
        calls.append(list(batch))
        if batch == ["bad"]:
            raise RuntimeError("database down")
        return batch

    coalescer = Coalescer(run)
    with pytest.raises(RuntimeError, match="database down"):
        coalescer.submit("bad")
    assert coalescer.submit("good") == "good"
