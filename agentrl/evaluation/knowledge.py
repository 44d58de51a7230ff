"""What a base model knows: each real fact of `agentrl.data.facts` asked `SAMPLES` times in the model's own chat
template (no protocol: the base model has never seen the action tags), right when a gold answer occurs in
the reply as whole words (the rewards' normalisation)."""

from __future__ import annotations

from dataclasses import replace

from agentrl.data.facts import SAMPLES, Fact
from agentrl.rewards.answers import normalize_answer


def is_right(reply: str, golds: list[str]) -> bool:
    """A free-form reply is right when a normalised gold answer occurs in it as whole words."""
    text = f" {normalize_answer(reply)} "
    return any(g and f" {g} " in text for g in map(normalize_answer, golds))


def measure_known(model_path: str, facts: list[Fact], temperature: float, samples: int = SAMPLES,
                  batch: int = 32, seed: int = 0) -> list[Fact]:
    """`facts` with `known_rate`: the share of `samples` replies of the model (transformers, fp32, its chat
    template with the question alone, at most 24 new tokens) that are right (`is_right`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"  # generation continues every row from its last token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    measured = []
    for start in range(0, len(facts), batch):
        chunk = facts[start:start + batch]
        texts = [tok.apply_chat_template([{"role": "user", "content": f.question}], tokenize=False,
                                         add_generation_prompt=True) for f in chunk]
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=24, do_sample=True, temperature=temperature, top_p=1.0,
                                 num_return_sequences=samples, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        replies = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
        for i, fact in enumerate(chunk):
            right = sum(is_right(r, fact.golds) for r in replies[i * samples:(i + 1) * samples])
            measured.append(replace(fact, known_rate=right / samples))
        print(f"[agentrl] make-facts: measured {len(measured)}/{len(facts)} facts", flush=True)
    return measured


