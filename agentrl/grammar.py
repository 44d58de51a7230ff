"""The action grammar, written once: the tags a model writes and reads, the protocols' fixed texts, how a
turn's blocks, shape and final answer are read, and the scripted turns of the eval workflows.

The protocols (`agentrl.envs.protocol`), the rewards (`agentrl.rewards`), the workflows
(`agentrl.envs.workflows`) and the tiny tokenizer's corpus (`agentrl.data.synthetic`, `agentrl.models.tiny`)
all read it from here. A leaf module: the standard library only.

Every scan of model output runs in linear time (`str.find` based), so a turn like `<answer>` followed by
thousands of spaces cannot stall a reward or an environment actor; tag names are matched literally.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# -- tags ---------------------------------------------------------------------------------------------------
REASON = "reason"
ANSWER = "answer"
SEARCH = "search"
TEXT_SEARCH = "text_search"
IMG = "img"
INFORMATION = "information"
OBSERVATION = "observation"
THINK = "think"


def open_tag(tag: str) -> str:
    """`<tag>`."""
    return f"<{tag}>"


def close_tag(tag: str) -> str:
    """`</tag>`."""
    return f"</{tag}>"


# The `mmsearch_r1` protocol's image search: no query, it searches the trajectory's input image.
IMAGE_SEARCH_ACTION = open_tag(SEARCH) + open_tag(IMG) + close_tag(SEARCH)

# The tools the search actions call (names of `agentrl.envs` tools).
IMAGE_SEARCH_TOOL = "image_search"
TEXT_SEARCH_TOOL = "text_search"

# The tags the tiny tokenizer adds as single tokens; the order fixes their token ids.
ACTION_TAGS = [t for tag in (REASON, SEARCH, TEXT_SEARCH, ANSWER, INFORMATION, OBSERVATION, THINK)
               for t in (open_tag(tag), close_tag(tag))] + [open_tag(IMG)]

# -- fixed texts (the tiny tokenizer is trained on them: change a byte and the tokenisation changes) -----------
PROTOCOL_PROMPTS: dict[str, str] = {
    "lookup": (
        "Answer the question. Think inside <reason> and </reason>. If you do not know the answer, "
        "look it up with <search>name</search>; the result comes back inside <information> and "
        "</information>. Give the final answer inside <answer> and </answer>."
    ),
    # Our wording, faithful to the seed's Search template.
    "mmsearch_r1": (
        "Answer the user's question about the image. First think about what you know and what you "
        "are missing inside <reason> and </reason>. Then take exactly one action:\n"
        "- If you can answer, write the short final answer inside <answer> and </answer>.\n"
        "- If you need to identify what the image shows, write <search><img></search> to search the web "
        "with the image; the results come back inside <information> and </information>.\n"
        "- If you need a fact, write a text query inside <text_search> and </text_search>; summaries of "
        "web pages come back inside <information> and </information>.\n"
        "Search only when you need to."
    ),
    "react": (
        "Answer the user's question. Reason step by step inside <reason> and </reason>, then act once: "
        "<answer>final answer</answer>, <search>image</search> to search the web with the input image, or "
        "<search>your query</search> to search the web with text. Results come back inside <observation> "
        "and </observation>."
    ),
    "reasoning": (
        "Solve the problem. Think step by step inside <think> and </think>, then give the final answer "
        "inside <answer> and </answer>."
    ),
}
# A short `env.system_prompt` for text-only tasks in the `mmsearch_r1` protocol (configs/learn_toy.yaml): the
# same actions without the image ones; a tiny model learns faster without 150 tokens of instructions.
MMSEARCH_R1_TEXT_PROMPT = (
    "Answer the question. Think inside <reason> and </reason>, then either answer inside <answer> and "
    "</answer> or, if you need a fact, search for it inside <text_search> and </text_search>."
)
# Appended to each `mmsearch_r1` observation, with {question}.
MMSEARCH_R1_AFTER_SEARCH_PROMPT = (
    "Question: {question}\nUse the information above. Think inside <reason> and </reason>, then "
    "either answer inside <answer> and </answer> or take one more search action if you still need it."
)
# The `direct` workflow's system prompt (for a protocol with tools).
DIRECT_PROMPT = (
    "Answer the user's question directly, without searching. First think about it inside <reason> and "
    "</reason>, then write the short final answer inside <answer> and </answer>."
)
INVALID_ACTION_OBSERVATION = (
    "Your last turn had no valid action. Reply with one action: a search in its tags, or the final "
    "answer in <answer></answer>."
)
OVER_LIMIT_OBSERVATION = "You have used all your {tool} calls. Answer the question now in <answer></answer>."

# -- blocks ---------------------------------------------------------------------------------------------------
_WHITESPACE = re.compile(r"\s*")  # linear: one run of whitespace from a position


def blocks(text: str, tag: str) -> Iterator[tuple[int, str]]:
    """Each `<tag>...</tag>` block, left to right, as (start, content): the content runs to the first
    close after the open, and the next block starts after that close (regex `<tag>(.*?)</tag>` semantics)."""
    opening, closing = open_tag(tag), close_tag(tag)
    pos = 0
    while True:
        start = text.find(opening, pos)
        if start < 0:
            return
        end = text.find(closing, start + len(opening))
        if end < 0:  # no later open has a close either
            return
        yield start, text[start + len(opening):end]
        pos = end + len(closing)


def first_block(text: str, tag: str) -> tuple[int, str] | None:
    """The first `<tag>...</tag>` block as (start, content stripped); None without one."""
    for start, content in blocks(text, tag):
        return start, content.strip()
    return None


def last_block(text: str, tag: str) -> str | None:
    """The content of the last `<tag>...</tag>` block, stripped; None without one."""
    last = None
    for _, content in blocks(text, tag):
        last = content
    return None if last is None else last.strip()


def final_answer(turn: str) -> str | None:
    """The final answer of a turn: its last `<answer>...</answer>`, stripped; None without one. The one rule:
    the protocols' answer action (so `Trajectory.answer` and results.jsonl) and the rewards all read it."""
    return last_block(turn, ANSWER)


def _find_spaced(text: str, parts: tuple[str, ...]) -> int:
    """Where `parts` first occur one after another with only whitespace between them; -1 if nowhere.
    Linear when parts[0] cannot occur inside the later parts and whitespace: what is scanned after one
    occurrence of parts[0] then ends before the next one."""
    start = text.find(parts[0])
    while start >= 0:
        pos = start + len(parts[0])
        for part in parts[1:]:
            pos = _WHITESPACE.match(text, pos).end()
            if not text.startswith(part, pos):
                break
            pos += len(part)
        else:
            return start
        start = text.find(parts[0], start + 1)
    return -1


def find_image_search(text: str) -> int:
    """Where the first `<search><img></search>` starts (whitespace between its tags allowed); -1 if nowhere."""
    return _find_spaced(text, (open_tag(SEARCH), open_tag(IMG), close_tag(SEARCH)))


# -- turn shapes (the MMSearch-R1 reward's format rules) ------------------------------------------------------
def _in_order(t: str, first: str, middle: tuple[str, ...], last: str) -> bool:
    """`re.match("^first.*m1.*m2...*last$", t, re.S)` without backtracking: leftmost finds, then the end
    (`$` also matches before one trailing newline)."""
    if not t.startswith(first):
        return False
    pos = len(first)
    for part in middle:
        found = t.find(part, pos)
        if found < 0:
            return False
        pos = found + len(part)
    ends = [len(t) - len(last)] if t.endswith(last) else []
    if t.endswith(last + "\n"):
        ends.append(len(t) - len(last) - 1)
    return any(end >= pos for end in ends)


def _once(t: str, tag: str) -> bool:
    return t.count(open_tag(tag)) == 1 and t.count(close_tag(tag)) == 1


def _lacks(t: str, tag: str) -> bool:
    return open_tag(tag) not in t and close_tag(tag) not in t


def is_direct_answer(t: str) -> bool:
    """One reason, then one answer, nothing after it, and no search."""
    return (_in_order(t, open_tag(REASON), (close_tag(REASON), open_tag(ANSWER)), close_tag(ANSWER))
            and _once(t, REASON) and _once(t, ANSWER) and IMAGE_SEARCH_ACTION not in t and _lacks(t, TEXT_SEARCH))


def is_image_search(t: str) -> bool:
    """One reason, then one `<search><img></search>` ending the turn, and no answer or text search."""
    return (_in_order(t, open_tag(REASON), (close_tag(REASON),), IMAGE_SEARCH_ACTION) and _once(t, REASON)
            and t.count(IMAGE_SEARCH_ACTION) == 1 and _lacks(t, ANSWER) and _lacks(t, TEXT_SEARCH))


def is_text_search(t: str) -> bool:
    """One reason, then one `<text_search>` ending the turn, and no answer or image search."""
    return (_in_order(t, open_tag(REASON), (close_tag(REASON), open_tag(TEXT_SEARCH)), close_tag(TEXT_SEARCH))
            and _once(t, REASON) and _once(t, TEXT_SEARCH) and _lacks(t, ANSWER) and IMAGE_SEARCH_ACTION not in t)


def has_search(t: str) -> bool:
    """The turn holds an image search or both text-search tags (the original's search count)."""
    return IMAGE_SEARCH_ACTION in t or (open_tag(TEXT_SEARCH) in t and close_tag(TEXT_SEARCH) in t)


def mmsearch_action(t: str) -> str | None:
    """A `mmsearch_r1` turn's action: "answer", "image", "text", or None for any other shape."""
    if is_direct_answer(t):
        return "answer"
    if is_image_search(t):
        return "image"
    if is_text_search(t):
        return "text"
    return None


def _whole_block(t: str, tag: str) -> str | None:
    """The content when `t` is exactly one `<tag>...</tag>` (`re.fullmatch("<tag>(.*)</tag>")`), else None."""
    opening, closing = open_tag(tag), close_tag(tag)
    if len(t) < len(opening) + len(closing) or not (t.startswith(opening) and t.endswith(closing)):
        return None
    if t.count(opening) != 1:
        return None
    return t[len(opening):len(t) - len(closing)]


def react_action(t: str) -> str | None:
    """A `react` turn's action: <reason>, then exactly one of <answer>...</answer> ("answer"),
    <search>image</search> ("image") or <search>query</search> ("text"); None for any other shape."""
    if not _once(t, REASON) or not t.startswith(open_tag(REASON)):
        return None
    rest = t[t.index(close_tag(REASON)) + len(close_tag(REASON)):].strip()
    if _whole_block(rest, ANSWER) is not None:
        return "answer"
    query = _whole_block(rest, SEARCH)
    if query is not None:
        return "image" if query.strip().lower() == "image" else "text"
    return None


# -- eval workflows ---------------------------------------------------------------------------------------------
WORKFLOWS = ("direct", "rag", "on_demand")


def rag_field_chars(max_tokens_per_turn: int) -> int:
    """How many characters the reason, the query and the answer of a scripted rag turn may have."""
    return max(8, max_tokens_per_turn // 4)


def rag_turn_tokens(max_tokens_per_turn: int) -> int:
    """A token budget no scripted rag turn can exceed: its longest match, one token per character."""
    longest_tags = open_tag(REASON) + close_tag(REASON) + open_tag(TEXT_SEARCH) + close_tag(TEXT_SEARCH)
    return max(max_tokens_per_turn, len(longest_tags) + 2 * rag_field_chars(max_tokens_per_turn))


def rag_turn_regex(protocol: str, max_tokens_per_turn: int, image: bool = True) -> list[str]:
    """The scripted turns of the `rag` workflow (an image search when `image`, a text search, the answer), as
    regexes in the protocol's action tags, for the generator's structured outputs."""
    c = rag_field_chars(max_tokens_per_turn)
    reason = f"<reason>[ -;=-~]{{0,{c}}}</reason>"  # printable ASCII but '<'
    text = f"[!-;=-~][ -;=-~]{{0,{c - 1}}}"
    if protocol == "mmsearch_r1":
        turns = [f"{reason}<search><img></search>", f"{reason}<text_search>{text}</text_search>",
                 f"{reason}<answer>{text}</answer>"]
    elif protocol == "react":
        turns = [f"{reason}<search>image</search>", f"{reason}<search>{text}</search>",
                 f"{reason}<answer>{text}</answer>"]
    else:
        raise ValueError(f"--workflow rag: env.protocol '{protocol}' has no image and text search actions "
                         "(use mmsearch_r1 or react)")
    return turns if image else turns[1:]


def check_workflow(workflow: str, protocol: str, tools: list[str]) -> None:
    """ValueError (one line) when `workflow` is unknown or cannot run with this protocol and these tools."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"--workflow: '{workflow}' is not one of {', '.join(WORKFLOWS)}")
    if workflow == "rag":  # needs the text search (the image search when configured) and their actions
        rag_turn_regex(protocol, 0)
        if TEXT_SEARCH_TOOL not in tools:
            raise ValueError(f"--workflow rag: env.tools lacks {TEXT_SEARCH_TOOL}")
