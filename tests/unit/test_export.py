"""export (Hugging Face, Meta) and --init-from, in-process: a GQA model saved with our own
checkpoint writer, read back by transformers' LlamaForCausalLM and AutoTokenizer (configs
built locally, never the Hub) and by our importer; one training step from imported weights;
the bad inputs."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from model import tokenizer as tk
from model.llama import Transformer
from model.presets import ModelArgs, Preset
from orchestrator.run import checkpoint as ckpt
from orchestrator.store.home import Home
from orchestrator.store import Store
from tests.conftest import assert_bad_input

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GQA = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=416, multiple_of=32,
                ffn_dim_multiplier=1.3, norm_eps=1e-5, max_seq_len=32, rope_theta=500000.0)
TEXTS = ["def f(x):\n    return  x + 1  # héllo 12345", "  two leading spaces\tand a tab",
         "\nimport json\n\n\nclass A:\n    pass"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Two SentencePiece models in LLaMA's settings: the run's, and another one."""
    root = tmp_path_factory.mktemp("tok")
    src = Path(json.__file__).parent
    text = root / "text.txt"
    text.write_text("\n".join(p.read_text() for p in sorted(src.glob("*.py"))))
    return (tk.train(text, root, "ours", vocab_size=400).path,
            tk.train(text, root, "other", vocab_size=380).path)


def _make_run(home: Path, tok: str, args: ModelArgs = GQA, steps=(2, 4), seed=0):
    """A run in the store whose checkpoints (our writer, one process) hold a model of `args`."""
    store = Store(Home(home).db_url)
    preset = Preset("gqa-test", args, lr=1e-3, batch_tokens=64, train_tokens=1000, seq_len=32)
    run = store.create_run(preset.name, {"request": {"data": "none", "custom_preset": asdict(preset)}},
                           status="completed")
    run_dir = home / "runs" / run.id
    store.update_run(run.id, storage_path=str(run_dir))
    model = Transformer(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in steps:
        model.init_weights(seed + step)
        ckpt.save(run_dir / "checkpoints", step, model, opt, {"step": step})
    shutil.copyfile(tok, run_dir / "tokenizer.model")
    return run.id, model, run_dir


@pytest.fixture
def run(home, tokenizers):
    home.mkdir(parents=True, exist_ok=True)
    return _make_run(home, tokenizers[0])


def _export(run_cli, run_id, out, *args):
    res = run_cli("export", run_id, "--out", out, *args, "--json")
    assert res.code == 0, res.stderr
    return res.json()


def test_hf_export_gives_the_checkpoint_logits_and_tokenizer(run, run_cli, tmp_path, tokenizers):
    from transformers import AutoTokenizer, LlamaForCausalLM

    run_id, model, _ = run
    info = _export(run_cli, run_id, tmp_path / "hf", "--format", "hf", "--dtype", "fp32")
    assert info["step"] == 4 and info["params"] == model.num_params()
    assert set(info["files"]) >= {"model.safetensors", "config.json", "generation_config.json",
                                  "tokenizer.model", "tokenizer.json", "tokenizer_config.json"}
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["num_key_value_heads"] == 2 and config["rope_theta"] == 500000.0
    assert config["architectures"] == ["LlamaForCausalLM"]
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    x = torch.randint(0, GQA.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, model(x), atol=2e-5, rtol=1e-5)
    # the run's SentencePiece model, with its BOS/EOS ids, as transformers loads it
    hf_tok, ours = AutoTokenizer.from_pretrained(tmp_path / "hf"), tk.Tokenizer(tokenizers[0])
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id) == (ours.bos_id, ours.eos_id) == (1, 2)
    corpus = (Path(json.__file__).parent / "decoder.py").read_text().splitlines()
    for text in TEXTS + corpus:
        assert hf_tok(text)["input_ids"] == ours.encode(text, bos=True), text
        assert hf_tok.decode(ours.encode(text), skip_special_tokens=True) == text
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (1, 2)


def test_sharded_hf_export_and_older_step(run, tmp_path, home):
    from transformers import LlamaForCausalLM

    from orchestrator.run.export import export_run

    run_id, _, _ = run
    info = export_run(Store(Home(home).db_url), Home(home), run_id, fmt="hf", step=2,
                      out=str(tmp_path / "hf"), dtype="bf16", max_shard_bytes=60_000)
    shards = [f for f in info["files"] if f.startswith("model-")]
    assert info["step"] == 2 and len(shards) >= 3 and "model.safetensors" not in info["files"]
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    assert hf.dtype == torch.bfloat16
    model = Transformer(GQA)
    model.init_weights(2)  # step 2's weights
    expected = model.output.weight.detach().to(torch.bfloat16)
    assert torch.equal(hf.lm_head.weight, expected)


@pytest.mark.parametrize("fmt,dtype", [("hf", "fp32"), ("meta", "fp32"), ("meta", "bf16")])
def test_export_then_init_from_gives_back_the_weights(run, run_cli, tmp_path, fmt, dtype):
    from orchestrator.run.init_from import load_into, open_source

    run_id, model, _ = run
    _export(run_cli, run_id, tmp_path / "out", "--format", fmt, "--dtype", dtype)
    if fmt == "meta":
        params = json.loads((tmp_path / "out" / "params.json").read_text())
        assert params["n_kv_heads"] == 2 and params["ffn_dim_multiplier"] == 1.3
        assert sorted(os.listdir(tmp_path / "out")) == ["consolidated.00.pth", "params.json",
                                                        "tokenizer.model"]
    src = open_source(tmp_path / "out")
    # Meta's params.json does not record the context length
    assert src.format == fmt and replace(src.args, max_seq_len=GQA.max_seq_len) == GQA
    fresh = Transformer(GQA)
    fresh.init_weights(99)
    assert load_into(fresh, tmp_path / "out") == len(list(model.parameters()))
    cast = torch.bfloat16 if dtype == "bf16" else torch.float32
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a.to(cast).float(), b), name


def test_meta_model_parallel_files_are_merged(run, run_cli, tmp_path):
    """A two-file release (as LLaMA 2 13B): column-parallel rows, row-parallel columns, the
    embedding split by columns, norms replicated."""
    from orchestrator.run.init_from import load_into

    run_id, model, _ = run
    _export(run_cli, run_id, tmp_path / "out", "--format", "meta", "--dtype", "fp32")
    sd = torch.load(tmp_path / "out" / "consolidated.00.pth", weights_only=True)
    parts: list[dict] = [{}, {}]
    for name, w in sd.items():
        dim = None if name.endswith("norm.weight") else \
            1 if name.endswith(("wo.weight", "w2.weight", "tok_embeddings.weight")) else 0
        for i in range(2):
            parts[i][name] = w if dim is None else w.chunk(2, dim=dim)[i].clone()
    for i in range(2):
        torch.save(parts[i], tmp_path / "out" / f"consolidated.0{i}.pth")
    fresh = Transformer(GQA)
    load_into(fresh, tmp_path / "out")
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name


def _one_step(model, batch, lr=1e-2):
    """One optimiser step as orchestrator/run/worker.py takes it: AdamW (fused), clipping 1.0."""
    opt = torch.optim.AdamW(model.optimizer_groups(0.1), lr=lr, betas=(0.9, 0.95), fused=True)
    loss = model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def test_one_step_from_init_from_equals_the_step_from_our_weights(run, run_cli, tmp_path):
    """Both models built by the trainer's build_model and sharded with FSDP2 (a gloo group of
    one); one from its own seeded weights, one from another seed then --init-from's loader."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from orchestrator.run.init_from import load_into
    from orchestrator.run.worker import TrainConfig, build_model

    run_id, _, _ = run
    _export(run_cli, run_id, tmp_path / "hf", "--format", "hf", "--dtype", "fp32")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        def cfg(seed):
            return TrainConfig(run_id="t", preset="gqa", model_args=asdict(GQA), data="", seed=seed,
                               checkpoint_dir="", seq_len=16, global_batch=2, micro_batch=2,
                               max_steps=1, total_steps=1, lr=1e-2, warmup_steps=0)

        ours = build_model(cfg(4), torch.device("cpu"))  # step 4's weights: the exported ones
        torch.manual_seed(0)
        ours.init_weights(4)
        imported = build_model(cfg(7), torch.device("cpu"))
        assert isinstance(imported.output.weight, DTensor)
        load_into(imported, tmp_path / "hf")
        batch = torch.randint(0, GQA.vocab_size, (2, 17), generator=torch.Generator().manual_seed(3))
        la, lb = _one_step(ours, batch), _one_step(imported, batch)
        assert la == lb
        for (name, a), b in zip(ours.state_dict().items(), imported.state_dict().values()):
            assert torch.equal(a.full_tensor(), b.full_tensor()), name
    finally:
        dist.destroy_process_group()


# -- bad inputs: one line, exit 2, nothing written -------------------------------------------
def test_bad_export_input(run, run_cli, tmp_path, home):
    run_id, _, run_dir = run
    out = tmp_path / "out"
    assert_bad_input(run_cli("export", "no-such-run", "--format", "hf", "--out", out), "no-such-run")
    assert_bad_input(run_cli("export", run_id, "--format", "gguf", "--out", out), "gguf", "hf, meta")
    assert_bad_input(run_cli("export", run_id, "--format", "hf", "--out", out, "--dtype", "int8"),
                     "int8", "bf16, fp32")
    assert_bad_input(run_cli("export", run_id, "--format", "hf", "--out", out, "--step", "3"),
                     "step 3", "complete checkpoints: 4, 2")
    assert_bad_input(run_cli("export", run_id, "--out", out), "--format")
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_bad_input(run_cli("export", run_id, "--format", "hf", "--out", out), "not empty", "--force")
    assert os.listdir(out) == ["notes.txt"]
    # --force writes over it, keeping what is not an export's
    assert run_cli("export", run_id, "--format", "meta", "--out", out, "--force").code == 0
    assert "notes.txt" in os.listdir(out) and "params.json" in os.listdir(out)
    # a run whose checkpoints are all gone or broken
    store = Store(Home(home).db_url)
    empty = store.create_run("tiny", {"request": {}}, status="failed")
    store.update_run(empty.id, storage_path=str(tmp_path / "nothing"))
    assert_bad_input(run_cli("export", empty.id, "--format", "hf", "--out", tmp_path / "o2"),
                     "no complete checkpoint", "none")
    shard = next((run_dir / "checkpoints" / "step-00000004").glob("*.distcp"))
    shard.write_bytes(b"\0" * shard.stat().st_size)
    assert_bad_input(run_cli("export", run_id, "--format", "hf", "--out", tmp_path / "o3",
                             "--step", "4"), "step 4", "checksum")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
    assert not [p for p in tmp_path.iterdir() if ".export-" in p.name]


@pytest.fixture
def datasets(home, tokenizers, tmp_path):
    """Two tiny datasets: one prepared with the run's tokenizer, one with another."""
    from orchestrator.data import prepare

    src = Path(json.__file__).parent
    for name, tok in (("same", tokenizers[0]), ("other", tokenizers[1])):
        prepare([f"json={src}/*.py"], name=name, home=Home(home), tokenizer=tok, val_fraction=0.1)
    return home


def test_init_from_preflight(run, run_cli, tmp_path, datasets):
    run_id, _, _ = run
    hf, meta = tmp_path / "hf", tmp_path / "meta"
    _export(run_cli, run_id, hf, "--format", "hf")
    _export(run_cli, run_id, meta, "--format", "meta")
    # no preset: the shape is the directory's
    for d in (hf, meta):
        res = run_cli("train", "--init-from", d, "--data", "same", "--dry-run", "--json",
                      "--max-steps", "1")
        assert res.code == 0, res.stderr
        assert res.json()["launch"]["params"] == Transformer(GQA).num_params()
    n_runs = len(run_cli("runs", "--json").json())
    assert_bad_input(run_cli("train", "tiny", "--init-from", hf, "--data", "same"),
                     "preset tiny", "model.embed_tokens.weight", "[8192, 256]", "[416, 64]")
    assert_bad_input(run_cli("train", "tiny", "--init-from", meta, "--data", "same"),
                     "preset tiny", "tok_embeddings.weight")
    assert_bad_input(run_cli("train", "--init-from", hf, "--data", "other"),
                     "prepared with tokenizer", "data prepare --tokenizer")
    assert_bad_input(run_cli("train", "--init-from", tmp_path / "nope", "--data", "same"),
                     "not a directory")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"x")
    assert_bad_input(run_cli("train", "--init-from", tmp_path / "junk", "--data", "same"),
                     "neither a Hugging Face", "weights.bin")
    # same shapes, another head split: the rotary layout would be wrong
    from orchestrator.run.init_from import check_shapes, open_source
    from planners.errors import BadInput

    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 8,
                                                "num_key_value_heads": 4, "head_dim": 8}))
    with pytest.raises(BadInput, match="n_heads is 8, preset x's is 4"):
        check_shapes(open_source(hf), GQA, "preset x")
    os.remove(meta / "tokenizer.model")
    assert_bad_input(run_cli("train", "--init-from", meta, "--data", "same"),
                     "no SentencePiece tokenizer.model")
    assert len(run_cli("runs", "--json").json()) == n_runs  # nothing started


def test_export_reads_a_bucket_through_fsspec(run, run_cli, tmp_path, home):
    """Checkpoints in object storage (fsspec's in-memory filesystem standing in for s3://):
    the same files come out as from the local copy."""
    import fsspec

    run_id, _, run_dir = run
    _export(run_cli, run_id, tmp_path / "local", "--format", "meta", "--dtype", "fp32")
    fs = fsspec.filesystem("memory")
    fs.put(str(run_dir), f"/bucket/{run_id}", recursive=True)
    Store(Home(home).db_url).update_run(run_id, storage_path=f"memory://bucket/{run_id}")
    shutil.rmtree(run_dir)
    try:
        info = _export(run_cli, run_id, tmp_path / "bucket", "--format", "meta", "--dtype", "fp32")
        assert info["checkpoint"] == f"memory://bucket/{run_id}/checkpoints/step-00000004"
        a = torch.load(tmp_path / "local" / "consolidated.00.pth", weights_only=True)
        b = torch.load(tmp_path / "bucket" / "consolidated.00.pth", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    finally:
        fs.rm(f"/bucket/{run_id}", recursive=True)
