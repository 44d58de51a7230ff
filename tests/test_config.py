"""Config: YAML plus dotted overrides; bad keys and values fail early with one line."""

import pytest

from agentrl.config import ConfigError, load_config

DEMO = "configs/demo.yaml"


def test_overrides_apply_on_top_of_the_yaml():
    cfg = load_config(DEMO, ["learner.lr=1e-5", "rollout.n=8", "trainer.mode=sync"])
    assert cfg.learner.lr == 1e-5 and cfg.rollout.n == 8 and cfg.trainer.mode == "sync"
    assert cfg.env.tools == ["lookup"]


def test_unknown_key_names_the_key_and_the_closest_valid_one():
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["learner.lrr=1e-5"])
    msg = str(e.value)
    assert "'learner.lrr'" in msg and "'learner.lr'" in msg and "\n" not in msg


def test_unknown_key_in_the_yaml_file_is_reported(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trainer:\n  max_stalenes: 2\n")
    with pytest.raises(ConfigError, match="trainer.max_stalenes.*trainer.max_staleness"):
        load_config(str(f))


@pytest.mark.parametrize("override,key", [
    ("trainer.batch_groups=-1", "trainer.batch_groups"),
    ("trainer.max_staleness=-1", "trainer.max_staleness"),
    ("trainer.spare_groups=-2", "trainer.spare_groups"),
    ("model.path=/no/such/model", "model.path"),
    ("rollout.n=abc", "rollout.n"),
    ("trainer.mode=fast", "trainer.mode"),
])
def test_bad_values_fail_before_anything_starts(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEMO, [override])


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")
