"""Zero-shot multiple-choice evaluation as LLaMA §3 does it: items (items.py), the benchmark
files as their authors distribute them (readers.py), log-likelihood scoring (scoring.py), and
the `eval` command's checkpoint and directory loading (evaluate.py)."""
