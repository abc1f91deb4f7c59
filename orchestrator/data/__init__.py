"""Data: text or token files -> a tally dataset (shards + manifest) -> batches for training.

    sources.py   source specs, files/dirs/globs/URIs, compressed, JSONL, Parquet, as a stream
    encode.py    tokenisation on every core: worker processes, or Ray tasks with --address
    mix.py       the mixture drawn from per-document facts, window shuffle, shard packing
    prepare.py   `data prepare`: the four passes, resumable, bounded in memory
    importer.py  `data import`: nanoGPT .bin and Megatron-LM .bin/.idx token files
    dataset.py   the dataset on disk: manifest, memory-mapped shards, the Sampler
    loader.py    batches read ahead of the training step on a background thread
    demo.py      the demo mixture's real text
"""

from orchestrator.data.dataset import (FORMAT, Sampler, TokenDataset, dataset_dir,  # noqa: F401
                                       list_datasets, open_dataset, show_dataset, summary,
                                       token_dtype)
from orchestrator.data.prepare import (DEFAULT_SHARD_TOKENS, prepare,  # noqa: F401
                                       prepare_command)
from orchestrator.data.sources import (LLAMA_MIXTURE, MIXTURES, Source,  # noqa: F401
                                       apply_mixture, parse_source, resolve_files)
