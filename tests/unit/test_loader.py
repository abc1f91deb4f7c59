"""Prefetcher: the trainer's batches read ahead on a thread, the same ones, in the same order,
from any resume step; errors reach the training loop."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from model import tokenizer as tk
from orchestrator.data import Sampler, open_dataset
from orchestrator.data.importer import import_tokens
from orchestrator.data.loader import Prefetcher
from orchestrator.store.home import Home
from tests.unit.test_data_stream import make_docs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    (d / "s.txt").write_text("\n".join(make_docs(300, 2)) + "\n")
    tok = tk.train(d / "s.txt", d, "t", vocab_size=350)
    rng = np.random.default_rng(0)
    rng.integers(3, 350, 200_000).astype(np.uint16).tofile(d / "train.bin")
    import_tokens("l", str(d / "train.bin"), tokenizer=tok.path, home=Home(d), shard_tokens=30_000)
    return open_dataset("l", Home(d))


def test_same_batches_from_any_step(dataset):
    sampler = Sampler(dataset.num_sequences(64), 3, 16, rank=1, world_size=2)
    for first in (0, 5, sampler.steps_per_epoch + 1):  # a fresh run, a resume, the next epoch
        with Prefetcher(dataset, sampler, 64, 4, first_step=first, last_step=first + 6) as pf:
            for step in range(first, first + 6):
                got = pf.next()
                want = dataset.get_batch(Sampler(dataset.num_sequences(64), 3, 16, 1, 2)
                                         .indices(step), 64)
                assert len(got) == 2 and all(g.dtype == torch.int64 for g in got)
                assert torch.equal(torch.cat(got), torch.from_numpy(want))
            with pytest.raises(StopIteration):
                pf.next()


def test_reads_ahead_and_hands_errors_to_the_loop(dataset):
    sampler = Sampler(dataset.num_sequences(64), 0, 8)
    pf = Prefetcher(dataset, sampler, 64, 8, depth=3)
    deadline = time.time() + 5
    while pf._q.qsize() < 3 and time.time() < deadline:
        time.sleep(0.01)
    assert pf._q.qsize() == 3  # three steps ready before the loop asked for one
    pf.close()

    class Broken:
        def get_batch(self, idx, seq_len):
            raise OSError("shard vanished")

    with Prefetcher(Broken(), sampler, 64, 8) as bad, pytest.raises(OSError, match="vanished"):
        bad.next()
