"""The `hierarchical` reward: verdict parsing on recorded judge replies, the static verifier (normalised
match and math-verify), the LLM judge's timeout, retries and cache against a local server, and the
plumbing against a real `vllm serve` of the tiny model on loopback."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from agentrl.records import RewardInput
from agentrl.rewards import get_reward_fn, score_async
from agentrl.rewards.hierarchical import JudgeConfig, get_judge, parse_verdict
from tests.fake_apis import FakeAPIs

R = "<reason>I think.</reason>"

# Replies as judges write them (GPT-4o-, Qwen- and tiny-model-style), with the verdict the spec gives each.
RECORDED = [
    ("The prediction 'teal blue' is a shade of blue, as the gold answer says.\nVerdict: correct", True),
    ("Paris is not Lyon.\nVerdict: incorrect", False),
    ("**Verdict:** Correct", True),
    ("verdict = INCORRECT.", False),
    ("Verdict: correct\nOn reflection the years differ.\nVerdict: incorrect", False),  # the last verdict counts
    ("Verdict: 1", True),
    ("Yes", True),
    ("no.", False),
    ("  Correct\n", True),
    ("The prediction is not correct", None),  # no verdict line, not one word: unparseable
    ("I cannot tell from the image.", None),
    ("", None),
    ("kasazo lilac teal <reason> azure", None),
]


@pytest.mark.parametrize("reply,verdict", RECORDED)
def test_verdicts_are_parsed_from_recorded_judge_replies(reply, verdict):
    assert parse_verdict(reply) is verdict


def score(answer: str, gold, turns_before=(), **options):
    inp = RewardInput(question="What is shown?", turns=[*turns_before, f"{R}<answer>{answer}</answer>"],
                      answer=None, ground_truth=gold)
    return asyncio.run(score_async(get_reward_fn("hierarchical"), inp, options))


@pytest.mark.parametrize("answer,gold,acc", [
    ("0.5", "1/2", 1.0), ("\\frac{1}{2}", "0.5", 1.0), ("42 apples", "42", 1.0),
    ("The Eiffel Tower", "eiffel tower", 1.0), ("3", "4", 0.0), ("blue", "teal blue", 0.0)])
def test_the_static_verifier_matches_normalised_text_and_math(answer, gold, acc):
    r = score(answer, gold, judge=False)
    assert r.components["accuracy"] == acc and r.components["verified"] == acc and r.components["judged"] == 0.0


BOMB = "$10^{10^{10}}$"  # 14 characters that keep sympy busy for good


def test_an_answer_that_hangs_math_verify_scores_0_in_seconds_off_the_main_thread_and_is_counted():
    """As in a Ray actor: the reward runs on an event loop in another thread, where signal timeouts do not
    work. The worker is killed at its deadline; the next answer is verified by a fresh one."""
    import threading
    import time

    from agentrl.rewards.hierarchical import MATH_WORKER

    results: list = []

    def actor_thread() -> None:
        async def group():
            t0 = time.monotonic()
            scores = await asyncio.gather(*[score_async(get_reward_fn("hierarchical"), RewardInput(
                "q", [f"{R}<answer>{a}</answer>"], None, "5"), {"judge": False}) for a in (BOMB, "5", "2+3")])
            return scores, time.monotonic() - t0

        results.append(asyncio.run(group()))

    killed = MATH_WORKER.killed
    thread = threading.Thread(target=actor_thread)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    (bomb, plain, sum_), seconds = results[0]
    assert seconds < 20 and MATH_WORKER.killed == killed + 1
    assert bomb.components["accuracy"] == 0.0 and bomb.components["verify_timeout"] == 1.0
    assert plain.components["verified"] == 1.0 and sum_.components["verified"] == 1.0  # a fresh worker


@pytest.mark.slow
def test_a_reward_actor_given_that_answer_keeps_serving_other_groups(cluster):
    import time

    import ray

    from agentrl.actors.factory import create_reward_pool
    from agentrl.config import load_config

    pool = create_reward_pool(load_config("configs/demo.yaml", ["reward.name=hierarchical",
                                                                "reward.options={judge: false}"]), "hang-test")
    def group(answer: str) -> list[RewardInput]:
        return [RewardInput("q", [f"{R}<answer>{answer}</answer>"], None, "5")]

    try:
        t0 = time.monotonic()
        hanging = pool.handles[0].score_group.remote(group(BOMB))
        other = ray.get(pool.handles[0].score_group.remote(group("5")), timeout=60)
        assert other[0].components["verified"] == 1.0
        assert ray.get(hanging, timeout=60)[0].components["verify_timeout"] == 1.0
        assert time.monotonic() - t0 < 30
    finally:
        for h in pool.handles:
            ray.kill(h)


def test_search_penalty_and_format_are_those_of_the_presets():
    r = score("0.5", "1/2", turns_before=[f"{R}<search><img></search>"], judge=False)
    assert r.components["search_count"] == 1 and r.components["format"] == 1.0
    assert r.total == pytest.approx(0.9 * 0.9 + 0.1)
    r = score("0.5", "1/2", turns_before=[f"{R}<text_search>a</text_search>", f"{R}<text_search>b</text_search>"],
              judge=False, format="mmsearch_r1")
    assert r.components["format"] == 0.0  # text -> text -> answer is not a shape the original accepts


def test_bad_options_fail_naming_the_option():
    with pytest.raises(ValueError, match="reward.options.judge_url"):
        JudgeConfig.from_options({})
    with pytest.raises(ValueError, match="reward.options.judge_ulr: unknown option"):
        JudgeConfig.from_options({"judge_ulr": "http://x"})
    with pytest.raises(ValueError, match="JUDGE_KEY_UNSET_ENV is not set"):
        JudgeConfig.from_options({"judge_url": "http://x/v1", "judge_api_key_env": "JUDGE_KEY_UNSET_ENV"})


class FakeJudge(FakeAPIs):
    """An OpenAI-compatible chat endpoint that replies with a verdict, fails first, hangs, or echoes the
    request's Authorization header (as a misconfigured proxy might), on request."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict] = []
        self.auth: list[str] = []
        self.fail_first = 0
        self.hang = False
        self.echo_auth = False
        self.reply = "The meanings agree.\nVerdict: correct"

    def _app(self) -> web.Application:
        async def chat(req: web.Request) -> web.Response:
            self.hits["chat"] += 1
            self.bodies.append(await req.json())
            self.auth.append(req.headers.get("Authorization", ""))
            if self.hang:
                await asyncio.sleep(5)
            if self.fail_first > 0:
                self.fail_first -= 1
                return web.Response(status=503)
            reply = f"You sent: {self.auth[-1]}\n{self.reply}" if self.echo_auth else self.reply
            return web.json_response({"object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]})

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


@pytest.fixture
def judge_server():
    server = FakeJudge().start()
    yield server
    server.stop()


def judge_options(server, tmp_path, **more):
    return {"judge_url": f"{server.url}/v1", "judge_model": "grader", "judge_cache": str(tmp_path / "judge.sqlite"),
            "judge_timeout_s": 1.0, "judge_retries": 2, "judge_backoff_s": 0.01, **more}


def test_the_judge_decides_where_the_verifier_gives_zero_and_its_verdict_is_cached(judge_server, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-judge-SECRET")
    opts = judge_options(judge_server, tmp_path, judge_api_key_env="MY_JUDGE_KEY")
    r = score("teal blue", "blue", **opts)
    assert r.components["accuracy"] == 1.0 and r.components["judged"] == 1.0 and r.components["verified"] == 0.0
    body = judge_server.bodies[0]
    assert body["model"] == "grader" and body["temperature"] == 0.0
    prompt = body["messages"][0]["content"]
    assert "Question: What is shown?" in prompt and "Gold answers: blue" in prompt and "Prediction: teal blue" in prompt
    assert judge_server.auth == ["Bearer sk-judge-SECRET"]
    assert "sk-judge-SECRET" not in repr(r)
    assert score("teal blue", "blue", **opts).components["accuracy"] == 1.0
    assert judge_server.hits["chat"] == 1  # the second judgment came from the cache
    score("1/2", "0.5", **opts)
    assert judge_server.hits["chat"] == 1  # the verifier decided: no judge call


# the variable the config names for the key: a key-like name, and one that says nothing (redacted by value)
@pytest.mark.parametrize("variable", ["JUDGE_KEY_X", "GRADER_AUTH"])
def test_a_judge_that_echoes_its_key_never_gets_it_into_the_cache(judge_server, tmp_path, monkeypatch, variable):
    key = "sk-judge-echoed-7c6b5a"
    monkeypatch.setenv(variable, key)  # a name the config chose: not one of the tools' key variables
    judge_server.echo_auth = True
    opts = judge_options(judge_server, tmp_path, judge_api_key_env=variable)
    assert score("teal blue", "blue", **opts).components["accuracy"] == 1.0
    assert judge_server.auth == [f"Bearer {key}"]  # sent, and echoed back in the reply
    again = asyncio.run(get_judge(JudgeConfig.from_options(opts)).judge("What is shown?", ["blue"], "teal blue", []))
    assert again.cached and "You sent: Bearer ***" in again.reply and key not in again.reply
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database and its WAL
    assert b"Bearer ***" in stored and key.encode() not in stored


def test_an_unparseable_reply_scores_zero_and_is_counted(judge_server, tmp_path):
    judge_server.reply = "Hmm, hard to say."
    r = score("teal blue", "blue", **judge_options(judge_server, tmp_path))
    assert r.components["accuracy"] == 0.0 and r.components["judge_unparsed"] == 1.0
    assert r.components["judge_error"] == 0.0


def test_the_judge_retries_on_5xx(judge_server, tmp_path):
    judge_server.fail_first = 2
    r = score("teal blue", "blue", **judge_options(judge_server, tmp_path))
    assert r.components["accuracy"] == 1.0 and judge_server.hits["chat"] == 3


def test_a_judge_that_times_out_scores_zero_counts_an_error_and_is_not_cached(judge_server, tmp_path):
    judge_server.hang = True
    opts = judge_options(judge_server, tmp_path, judge_timeout_s=0.3, judge_retries=1)
    r = score("teal blue", "blue", **opts)
    assert r.components["accuracy"] == 0.0 and r.components["judge_error"] == 1.0
    assert judge_server.hits["chat"] == 2  # one try and one retry
    judge_server.hang = False
    assert score("teal blue", "blue", **opts).components["accuracy"] == 1.0  # asked again, not a cached failure


def test_a_judge_that_sees_images_gets_the_question_image(judge_server, tmp_path):
    from tests.fake_apis import png_bytes

    inp = RewardInput(question="Which tower?", turns=[f"{R}<answer>the iron one</answer>"], answer=None,
                      ground_truth="Eiffel Tower", images=[png_bytes()])
    opts = judge_options(judge_server, tmp_path, judge_images=True)
    asyncio.run(score_async(get_reward_fn("hierarchical"), inp, opts))
    parts = judge_server.bodies[0]["messages"][0]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[-1]["type"] == "text" and "about the image" in parts[-1]["text"]


@pytest.fixture(scope="module")
def vllm_judge(tiny_text_path):
    from tests.test_search_servers import vllm_openai_server

    with vllm_openai_server(tiny_text_path, "tiny-judge") as url:
        yield url


@pytest.mark.slow
def test_a_real_vllm_server_judges_and_the_cache_saves_the_second_request(vllm_judge, tmp_path):
    opts = {"judge_url": vllm_judge, "judge_model": "tiny-judge", "judge_cache": str(tmp_path / "judge.sqlite"),
            "judge_max_tokens": 16}
    judge = get_judge(JudgeConfig.from_options(opts))
    first = score("kasazo lilac", "teal", **opts)
    # the tiny model writes random text: a parsed verdict decides, an unparseable one scores 0 and is counted
    assert first.components["judged"] == 1.0 and first.components["judge_error"] == 0.0
    reply = asyncio.run(judge.judge("What is shown?", ["teal"], "kasazo lilac", []))
    assert reply.cached and first.components["accuracy"] == float(bool(reply.verdict))
    assert first.components["judge_unparsed"] == float(reply.verdict is None)
    calls = judge.client.http.calls
    again = score("kasazo lilac", "teal", **opts)
    assert judge.client.http.calls == calls == 1 and again.components == first.components
