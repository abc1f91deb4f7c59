"""Batches read ahead of the training step, on a background thread.

    loader = Prefetcher(dataset, sampler, seq_len, micro_batch, first_step=start)
    for step in ...: micro_batches = loader.next()   # torch int64 tensors, (micro_batch, T + 1)

The thread walks the same Sampler steps the loop would, in order, `depth` steps ahead, so a
run resumed at step k reads exactly the batches an uninterrupted run reads from step k on. On
CUDA the rows are copied into pinned memory there, so the step's host-to-device copy can be
non-blocking. Reading is memory-mapped shards (orchestrator/data/dataset.py), numpy releases
the GIL for the copies, and the step does not wait unless the reader falls behind.
"""

from __future__ import annotations

import queue
import threading

import torch

_DONE = object()


class Prefetcher:
    def __init__(self, dataset, sampler, seq_len: int, micro_batch: int, first_step: int = 0,
                 last_step: int | None = None, pin: bool = False, depth: int = 2):
        self.dataset, self.sampler = dataset, sampler
        self.seq_len, self.micro_batch, self.pin = seq_len, micro_batch, pin
        self.step, self.last = first_step, last_step
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _read(self, step: int) -> list[torch.Tensor]:
        idx = self.sampler.indices(step)
        out = []
        for m in range(0, len(idx), self.micro_batch):
            t = torch.from_numpy(self.dataset.get_batch(idx[m:m + self.micro_batch], self.seq_len))
            out.append(t.pin_memory() if self.pin else t)
        return out

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        step = self.step
        try:
            while not self._stop.is_set() and (self.last is None or step < self.last):
                if not self._put((step, self._read(step))):
                    return
                step += 1
            self._put((step, _DONE))
        except BaseException as e:  # handed to the training loop, raised there
            self._put((step, e))

    def next(self) -> list[torch.Tensor]:
        """The micro-batches of the next step (sampler step numbers from first_step on)."""
        step, item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        if item is _DONE:
            raise StopIteration(f"no batches after step {step}")
        self.step = step + 1
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
