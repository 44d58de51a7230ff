"""The reward presets on hand-written cases, rule by rule: the MMSearch-R1 format and penalty, the shared
answer rules (gold answers, final answer), and every preset through `agentrl score` on the same rows."""

import pytest

from agentrl.records import RewardInput
from agentrl.rewards import get_reward_fn

R, A = "<reason>I think.</reason>", "<answer>Eiffel Tower</answer>"
IMG, TXT = "<search><img></search>", "<text_search>tallest tower in paris</text_search>"


def score(preset, turns, gt="Eiffel Tower", cands=(), **options):
    inp = RewardInput(question="q", turns=list(turns), answer=None, ground_truth=gt, candidate_answers=list(cands))
    return get_reward_fn(preset)(inp, options)


def test_direct_correct_answer_scores_one():
    r = score("mmsearch_r1", [R + A])
    assert r.total == pytest.approx(1.0)
    assert r.components == {"accuracy": 1.0, "format": 1.0, "search_count": 0.0}


def test_correct_answer_after_search_pays_the_penalty_once():
    r = score("mmsearch_r1", [R + IMG, R + A])
    assert r.total == pytest.approx(0.9 * 0.9 + 0.1)
    r = score("mmsearch_r1", [R + IMG, R + TXT, R + A])
    assert r.components["search_count"] == 2
    assert r.total == pytest.approx(0.9 * 0.9 + 0.1)


def test_search_count_penalty_applies_once_per_search():
    r = score("mmsearch_r1", [R + IMG, R + TXT, R + A], use_search_count_penalty=True)
    assert r.total == pytest.approx(0.9 * 0.81 + 0.1)


def test_a_wrong_answer_gets_no_search_penalty():
    r = score("mmsearch_r1", [R + IMG, R + "<answer>Big Ben</answer>"])
    assert r.components["accuracy"] == 0.0 and r.total == pytest.approx(0.1)


def test_an_answer_without_reason_loses_the_format_score():
    r = score("mmsearch_r1", [A])
    assert r.components == {"accuracy": 1.0, "format": 0.0, "search_count": 0.0}
    assert r.total == pytest.approx(0.9)


def test_text_text_answer_is_format_0_under_mmsearch_r1_and_1_under_general():
    turns = [R + TXT, R + TXT, R + A]
    assert score("mmsearch_r1", turns).components["format"] == 0.0
    assert score("general", turns).components["format"] == 1.0
    assert score("general", turns).components["search_count"] == 2


def test_text_then_image_order_is_rejected_by_the_original():
    assert score("mmsearch_r1", [R + TXT, R + IMG, R + A]).components["format"] == 0.0
    assert score("general", [R + TXT, R + IMG, R + A]).components["format"] == 1.0


def test_general_respects_the_search_limits():
    turns = [R + IMG, R + IMG, R + A]
    assert score("general", turns).components["format"] == 0.0  # one image search allowed
    assert score("general", turns, max_image_searches=2).components["format"] == 1.0


def test_answer_is_the_last_answer_of_the_last_turn():
    r = score("mmsearch_r1", [R + "<answer>Big Ben</answer> <answer>eiffel tower.</answer>"])
    assert r.components["accuracy"] == 1.0  # normalised; and two <answer>s break the format
    assert r.components["format"] == 0.0


def test_candidate_answers_count_and_subem_matches_inside():
    assert score("mmsearch_r1", [R + "<answer>La tour Eiffel</answer>"], cands=["la tour eiffel"]).components[
        "accuracy"] == 1.0
    r = score("mmsearch_r1", [R + "<answer>It is the Eiffel Tower in Paris</answer>"], reward_mode="SubEM")
    assert r.components["accuracy"] == 1.0
    r = score("mmsearch_r1", [R + "<answer>It is the Eiffel Tower in Paris</answer>"])
    assert r.components["accuracy"] == 0.0


def test_options_follow_the_original_names():
    r = score("mmsearch_r1", [R + IMG, R + A], search_penalty=0.5, format_penalty=0.2)
    assert r.total == pytest.approx(0.8 * 0.5 + 0.2)


def test_react_protocol_under_general():
    turns = ["<reason>look</reason><search>image</search>", "<reason>q</reason><search>paris tower</search>",
             "<reason>so</reason><answer>Eiffel Tower</answer>"]
    r = score("general", turns, protocol="react")
    assert r.components == {"accuracy": 1.0, "format": 1.0, "search_count": 2.0}


def test_agentrl_score_rescores_a_jsonl_file(tmp_path):
    import json

    from agentrl.cli import main

    src = tmp_path / "in.jsonl"
    rows = [{"turns": [R + A], "ground_truth": "Eiffel Tower"},
            {"turns": [R + IMG, R + A], "ground_truth": ["x"], "candidate_answers": ["eiffel tower"],
             "options": {"search_penalty": 0.5}}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["score", "--preset", "mmsearch_r1", str(src), "--out", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got[0]["score"] == pytest.approx(1.0) and got[0]["format"] == 1.0
    assert got[1]["score"] == pytest.approx(0.9 * 0.5 + 0.1) and got[1]["search_count"] == 1
    assert got[1]["turns"] == rows[1]["turns"]


def test_agentrl_score_names_the_bad_line(tmp_path, capsys):
    from agentrl.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text('{"turns": ["x"], "ground_truth": "a"}\n{"turns": ["x"]}\n')
    assert main(["score", "--preset", "mmsearch_r1", str(src)]) == 2
    err = capsys.readouterr().err  # rows count from 0, as in every data message
    assert err.count("\n") == 1 and "in.jsonl row 1: field 'ground_truth'" in err


def test_a_string_ground_truth_is_one_gold_answer_never_its_characters():
    from agentrl.rewards.answers import gold_answers

    assert gold_answers("Paris") == ["Paris"]
    assert gold_answers(["Paris", "paris, france"], ["City of Light"]) == ["Paris", "paris, france", "City of Light"]
    assert score("mmsearch_r1", [R + "<answer>p</answer>"], gt="Paris").components["accuracy"] == 0.0


@pytest.mark.parametrize("gold", ["A", "The", "an", "the.", "", "  "])
@pytest.mark.parametrize("answer", ["", " ", "the", "."])
def test_an_answer_or_gold_that_normalises_to_nothing_never_matches(gold, answer):
    from agentrl.rewards.answers import is_correct
    from agentrl.rewards.hierarchical import static_verify

    for preset in ("exact_match", "mmsearch_r1", "general"):
        for mode in ("EM", "SubEM"):
            r = score(preset, [R + f"<answer>{answer}</answer>"], gt=gold, reward_mode=mode) \
                if preset != "exact_match" else score(preset, [R + f"<answer>{answer}</answer>"], gt=gold)
            assert r.components["accuracy"] == 0.0, (preset, mode)
        assert not is_correct("Paris", [gold], "SubEM")  # an empty gold is inside every answer
    assert not static_verify(answer, [gold])
    assert is_correct("Paris", [gold, "paris"], "EM")  # the other golds still count


def test_the_answer_is_the_last_turns_final_answer_else_the_recorded_one():
    from agentrl.rewards.answers import predicted_answer

    def inp(turns, answer=None):
        return RewardInput(question="q", turns=turns, answer=answer, ground_truth="x")

    assert predicted_answer(inp(["<answer>a</answer>", R + "<answer> b </answer><answer> c </answer>"])) == "c"
    assert predicted_answer(inp([R + IMG], answer="recorded")) is None  # the turns decide when there are any
    assert predicted_answer(inp([], answer="recorded")) == "recorded"


# The same rows through every preset (`judge: false`: the hierarchical reward's static verifier alone).
# Columns: exact_match, mmsearch_r1, general, hierarchical (general format by default).
PRESETS = ("exact_match", "mmsearch_r1", "general", "hierarchical")
ROWS = [
    ({"turns": ["<answer>Paris</answer>"], "ground_truth": "Paris"}, (1.0, 0.9, 0.9, 0.9)),  # no <reason>: format 0
    ({"turns": ["<answer>p</answer>"], "ground_truth": "Paris"}, (0.0, 0.0, 0.0, 0.0)),  # "p" is not "Paris"
    ({"turns": [R + A], "ground_truth": ["x"], "candidate_answers": ["eiffel tower"]}, (1.0, 1.0, 1.0, 1.0)),
    ({"turns": [R + IMG, R + A], "ground_truth": "Eiffel Tower"}, (1.0, 0.91, 0.91, 0.91)),
    ({"turns": [R + TXT, R + TXT, R + A], "ground_truth": "Eiffel Tower"}, (1.0, 0.81, 0.91, 0.91)),
    ({"turns": [R + "<answer>Big Ben</answer><answer>Eiffel Tower</answer>"], "ground_truth": "Eiffel Tower"},
     (1.0, 0.9, 0.9, 0.9)),  # the last answer counts; two answers break the format
    ({"turns": [R + IMG], "ground_truth": "Eiffel Tower"}, (0.0, 0.0, 0.0, 0.0)),  # no answer
]


@pytest.mark.parametrize("column,preset", list(enumerate(PRESETS)))
def test_every_preset_scores_the_same_rows_through_agentrl_score(tmp_path, column, preset):
    import json

    from agentrl.cli import main

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({**row, "options": {"judge": False}}) + "\n" for row, _ in ROWS))
    assert main(["score", "--preset", preset, str(src), "--out", str(out)]) == 0
    got = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    assert got == pytest.approx([scores[column] for _, scores in ROWS])
