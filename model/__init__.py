"""Plain PyTorch LLaMA (llama.py), its presets (presets.py, torch-free) and tokenizer."""
