"""Chat turns as token ids, from the tokenizer's own chat template; text from outside stays text.

Markup this project writes (the template's turn markers, image placeholders) is tokenised with special
tokens parsed; text that comes from outside (questions in data rows, tool results, demonstrations) is
tokenised with special-token syntax read as plain text, so no chat-control, image or video token id can
come from it, however it is nested or split. Images go into outside text as `IMAGE_SLOT` characters,
which only `encode_text` turns into the model's placeholder tokens.
"""

from __future__ import annotations

from typing import Any

# Where an image's placeholder goes in an observation. A single character, removed from outside text by
# `outside_text` before any is placed: removing one character cannot assemble another (unlike a tag).
IMAGE_SLOT = "\ufffc"
TEXT_SLOT = "\ufffe"  # where the question goes in a rendered chat template (a noncharacter: never in text)


def outside_text(text: str) -> str:
    """Text from outside with the slot characters removed: it can then place no image."""
    return text.replace(IMAGE_SLOT, "").replace(TEXT_SLOT, "")


class ChatFormat:
    """Turn markers derived from the tokenizer's chat template, so any chat model family works."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        probe = [{"role": "user", "content": "Q"}]
        base = tokenizer.apply_chat_template(probe, tokenize=False)
        with_reply = tokenizer.apply_chat_template(probe + [{"role": "assistant", "content": "A"}],
                                                   tokenize=False)
        # text that closes an assistant turn, e.g. "<|im_end|>\n"
        self.turn_close = with_reply[with_reply.rindex("A") + 1:]
        two = tokenizer.apply_chat_template(probe + [{"role": "user", "content": "\x00"}],
                                            tokenize=False, add_generation_prompt=True)
        head, tail = two[len(base):].split("\x00")
        self.user_open, self.user_close_and_reply = head, tail
        self.eos_text = tokenizer.eos_token or ""
        # the Rust tokenizer directly: the Python wrapper's per-call overhead is most of an observation's
        # cost in an environment actor running thousands of trajectories (docs/benchmarks.md)
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self._backend = backend
        self._text_backend = None
        if backend is not None:  # a copy that reads special-token syntax as text (a flag of the tokenizer)
            from tokenizers import Tokenizer

            self._text_backend = Tokenizer.from_str(backend.to_str())
            self._text_backend.encode_special_tokens = True

    @property
    def fast_path(self) -> bool:
        """Whether `encode` calls the Rust tokenizer directly (a fast tokenizer), skipping the Python wrapper."""
        return self._backend is not None

    def encode(self, text: str) -> list[int]:
        """Token ids of markup this project wrote, special tokens parsed and none added."""
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_text(self, text: str, image_placeholder: str = "") -> list[int]:
        """Token ids of outside text: special-token syntax is text. Each IMAGE_SLOT becomes the ids of
        `image_placeholder` (the model's, for an image the caller placed; nothing when empty)."""
        pieces = text.split(IMAGE_SLOT)
        image_ids = self.encode(image_placeholder) if image_placeholder else []
        out = self._encode_plain(pieces[0])
        for piece in pieces[1:]:
            out += image_ids + self._encode_plain(piece)
        return out

    def _encode_plain(self, text: str) -> list[int]:
        if self._text_backend is not None:
            return self._text_backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    def prompt_ids(self, system: str, question: str, num_images: int = 0) -> list[int]:
        """The chat prompt; images (placeholders, not yet expanded) come before the question, as in the seed.
        The question is outside text; the template's markup around it is parsed as markup."""
        content: Any = TEXT_SLOT
        if num_images:
            content = [{"type": "image"}] * num_images + [{"type": "text", "text": TEXT_SLOT}]
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        rendered = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        head, tail = rendered.split(TEXT_SLOT)
        return self.encode(head) + self.encode_text(outside_text(question)) + self.encode(tail)

    def truncate(self, text: str, max_tokens: int) -> str:
        """Cut text to at most max_tokens tokens of this tokenizer."""
        ids = self._encode_plain(text)
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens]) + " ..."

    def observation_ids(self, text: str, model_ended_turn: bool, image_placeholder: str = "") -> list[int]:
        """Tokens that close the model's turn (if it did not), the user turn with `text` (outside text, its
        IMAGE_SLOTs as `image_placeholder`), and the next reply header."""
        close = self.turn_close
        if model_ended_turn and self.eos_text and close.startswith(self.eos_text):
            close = close[len(self.eos_text):]
        return (self.encode(close + self.user_open) + self.encode_text(text, image_placeholder)
                + self.encode(self.user_close_and_reply))
