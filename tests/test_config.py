"""Config: YAML plus dotted overrides; bad keys and values fail early with one line."""

import os

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
    ("learner.mini_batches=0", "learner.mini_batches"),
    ("learner.epochs=0", "learner.epochs"),
    ("learner.importance_mode=clip", "learner.importance_mode"),
    ("learner.lr_schedule=cosine", "learner.lr_schedule"),
    ("env.on_invalid_action=ignore", "env.on_invalid_action"),
    ("tools.text_search.summary_max_tokens=0", "tools.text_search.summary_max_tokens"),
    ("trainer.max_failed_groups_in_a_row=-1", "trainer.max_failed_groups_in_a_row"),
])
def test_bad_values_fail_before_anything_starts(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(DEMO, [override])


@pytest.mark.parametrize("name", ["../escaped", "/tmp/elsewhere", "a/b", "..", ".", ""])
def test_a_run_name_is_one_folder_inside_the_output_dir(name, tmp_path, capsys):
    from agentrl.cli import main

    with pytest.raises(ConfigError, match=r"bad value for 'trainer\.run_name'"):
        load_config(DEMO, [f"trainer.run_name='{name}'", f"trainer.output_dir={tmp_path}"])
    assert main(["train", DEMO, f"trainer.run_name='{name}'", f"trainer.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agentrl: ") and "trainer.run_name" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []  # nothing written, inside or outside


def test_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")


def test_the_loss_and_schedule_defaults_are_the_seeds():
    cfg = load_config(DEMO)
    assert cfg.learner.lr_schedule == "sigmoid_decay" and cfg.learner.importance_mode == "truncate"
    assert (cfg.learner.mini_batches, cfg.learner.epochs) == (1, 1)
    assert cfg.env.on_invalid_action == "end"


@pytest.mark.parametrize("override,key", [("rollout.top_p=0.9", "rollout.top_p"),
                                          ("rollout.top_k=20", "rollout.top_k")])
def test_a_filtered_sampler_is_refused_since_the_learner_scores_the_full_distribution(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*unfiltered"):
        load_config(DEMO, [override])


def test_a_group_of_one_is_refused_for_grpo():
    with pytest.raises(ConfigError, match=r"rollout\.n.*every advantage would be 0"):
        load_config(DEMO, ["rollout.n=1"])


@pytest.mark.parametrize("overrides,key,why", [
    (["learner.num_ranks=0"], "learner.num_ranks", "> 0"),
    (["learner.num_ranks=4", "learner.ranks_per_node=3"], "learner.ranks_per_node", "divide"),
    (["learner.offload=disk"], "learner.offload", "none, optimizer or all"),
    (["learner.offload=all", "learner.zero_stage=2"], "learner.offload", "zero_stage=3"),
    (["learner.offload=optimizer", "learner.zero_stage=0"], "learner.offload", "zero_stage >= 1"),
    (["rollout.tensor_parallel_size=0"], "rollout.tensor_parallel_size", "> 0"),
    (["rollout.weight_sync=nccl"], "rollout.weight_sync", "auto, object_store or collective"),
    (["rollout.weight_sync=collective", "rollout.tensor_parallel_size=2"], "rollout.weight_sync", "tensor_parallel"),
    (["rollout.weight_bucket_mb=0"], "rollout.weight_bucket_mb", "must be > 0"),
])
def test_learner_group_and_weight_sync_settings_are_checked(overrides, key, why):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*" + why):
        load_config(DEMO, overrides)


def test_the_built_in_model_names_are_the_ones_the_builder_builds():
    from agentrl.config.schema import BUILT_MODELS
    from agentrl.models.imported import PACKAGED_GGUF
    from agentrl.models.tiny import SIZED_MODELS, TINY_NAMES

    assert set(BUILT_MODELS) == set(TINY_NAMES) | set(SIZED_MODELS) | set(PACKAGED_GGUF)
    assert load_config("configs/demo.yaml", ["model.path=tiny-text-4l"]).model.path == "tiny-text-4l"
