"""Concurrent generations on the local model decode together in one batch (real model, real worker
process): each greedy reply is the same as when it runs alone, a grammar and stop strings still
hold per request, and cancelling one request leaves the others' replies as they were."""

from __future__ import annotations

import asyncio
import json
import threading

import llama_cpp
import pytest

from flowbox.models.base import ChatRequest, generate
from flowbox.models.batching import Job
from flowbox.models.files import model_path
from flowbox.models.local import ChatRunner, LocalChatModel

pytestmark = pytest.mark.slow  # a long module: run first (conftest.py)

REQUESTS = [
    ChatRequest(messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12, temperature=0),
    ChatRequest(messages=[{"role": "system", "content": "You are a poet."}, {"role": "user", "content": "A haiku about the sea."}],
                max_tokens=12, temperature=0),
    ChatRequest(messages=[{"role": "user", "content": "Count from 1 to 20."}], max_tokens=16, temperature=0, stop=["4"]),
    ChatRequest(messages=[{"role": "user", "content": "Is the sky green? Answer yes or no."}], max_tokens=8, temperature=0,
                json_schema={"enum": ["yes", "no"]}),
]


@pytest.fixture(scope="module")
def model(models_dir):
    model = LocalChatModel(model_path(models_dir, "smollm2"), name="local", n_ctx=1024, cache_bytes=32 << 20, parallel=4)
    yield model
    model.close()


def test_concurrent_replies_are_the_replies_alone(model):
    async def go():
        alone = [(await generate(model, request)).text for request in REQUESTS]
        most = 0

        async def noting_overlap(text: str) -> None:
            nonlocal most
            most = max(most, model.scheduler.running)

        together = await asyncio.gather(*(generate(model, request, key=f"org{i}", on_text=noting_overlap)
                                          for i, request in enumerate(REQUESTS)))
        return alone, [result.text for result in together], most

    alone, together, most = asyncio.run(go())
    assert most == 4  # the four ran at once
    assert together == alone
    assert alone[2].startswith("1") and "3" in alone[2] and "4" not in alone[2]  # cut before its stop string
    assert json.loads(alone[3]) in ("yes", "no")  # the grammar held, beside unconstrained requests


def test_cancelling_one_generation_leaves_the_others_alone(model):
    long = ChatRequest(messages=[{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
                       max_tokens=200, temperature=0)

    async def go():
        alone = [(await generate(model, request)).text for request in REQUESTS[:2]]
        started = asyncio.Event()

        async def on_text(text: str) -> None:
            started.set()

        story = asyncio.ensure_future(generate(model, long, key="story", on_text=on_text))
        others = asyncio.gather(*(generate(model, request, key=f"org{i}") for i, request in enumerate(REQUESTS[:2])))
        await started.wait()
        story.cancel()
        with pytest.raises(asyncio.CancelledError):
            await story
        assert model.scheduler.running_for("story") == 0  # its slot is free as soon as the cancel returns
        return alone, [result.text for result in await others]

    alone, together = asyncio.run(go())
    assert together == alone
    assert model.scheduler.running == 0 and model.scheduler.waiting == 0


def test_a_request_ending_between_others_leaves_no_gap(models_dir):
    """llama.cpp splits a batch at a gap in its sequence ids; when the second of three requests
    ends, the third moves into its sequence (the engine in this process, to see its slots)."""
    runner = ChatRunner(str(model_path(models_dir, "smollm2")), n_ctx=256, n_threads=1, cache_bytes=0, parallel=3)
    engine = runner.engine
    prompts = [runner.model.tokenize(f"<|im_start|>user\nTell me about {topic}.<|im_end|>\n<|im_start|>assistant\n".encode(),
                                     add_bos=False, special=True) for topic in ("the sea", "bread", "robots")]
    lengths = [24, 3, 24]
    jobs: list[Job] = []
    seen: list[list[int]] = []  # the running sequences as the third request goes on after the second ended

    def job(i: int, started: threading.Event) -> Job:
        def emit(text: str) -> None:  # on the engine's thread, between steps
            started.set()
            if i == 2 and len(jobs) == 3 and jobs[1].done.is_set():
                seen.append([slot.seq for slot in engine.slots if slot.job is not None])

        return Job(prompt=list(prompts[i]), max_tokens=lengths[i], sampler=None, stop=[], cancel=threading.Event(), emit=emit)

    try:
        alone = [engine.run(job(i, threading.Event())) for i in range(3)]
        together: list = [None] * 3
        threads = []
        for i in range(3):  # one after another, so they take sequences 0, 1, 2
            started = threading.Event()
            jobs.append(job(i, started))
            threads.append(threading.Thread(target=lambda i=i: together.__setitem__(i, engine.run(jobs[i]))))
            threads[-1].start()
            assert started.wait(30)
        for thread in threads:
            thread.join(60)
        # a sequence moving into a slot replaces the slot's cells, also when it has none yet (it was
        # cancelled or moved before its prompt was read): what a slot holds is what its tokens say
        empty, full = engine.slots[2], engine.slots[0]
        engine._clear(empty)
        assert full.tokens and engine._copy(empty, full)
        assert full.tokens == [] and llama_cpp.llama_memory_seq_pos_max(engine.memory, full.seq) == -1
    finally:
        runner.close()
    assert together == alone
    assert len(seen) > 1 and all(2 not in running for running in seen[1:])  # from the next step on, in the second's sequence
