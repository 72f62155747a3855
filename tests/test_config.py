from pathlib import Path

import pytest

from segkit.config import config_to_dict, load_config
from segkit.errors import ConfigError
from segkit.tasks import TASKS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("task", ["ventricle", "liver-cyst"])
def test_task_configs_load_and_match_the_task_specs(task):
    cfg = load_config(CONFIGS / f"{task}.yaml")
    assert cfg.task == TASKS[task]
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == 1e-3  # "1.0e-3" style stays a float


def test_task_configs_differ_only_where_the_tasks_differ():
    a = config_to_dict(load_config(CONFIGS / "ventricle.yaml"))
    b = config_to_dict(load_config(CONFIGS / "liver-cyst.yaml"))
    diffs = {f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]}
    allowed = {"preprocess.spacing", "augment.flip_lr", "eval.nsd_tolerance_mm"}
    # the training budget of the shipped ventricle recipe (scripts/train_shipped.sh); same optimiser and losses
    allowed |= {"train.epochs", "train.steps_per_epoch", "train.slices_per_case", "train.val_cases"}
    allowed |= {"train.monitor"}  # lesion tasks select on the pooled Dice (lesion-free val cases)
    # CT keeps its Hounsfield units: no gamma or brightness/contrast jitter, batch norm instead of instance norm
    allowed |= {"augment.gamma", "augment.brightness_contrast", "model.norm"}
    assert {d for d in diffs if not d.startswith("task.")} <= allowed


def test_unknown_key_fails_and_lists_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key train.learning_rate.*valid keys.*lr"):
        load_config(p)


def test_wrong_type_fails_with_the_key_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(p)


def test_overrides_convert_by_field_type():
    cfg = load_config(
        CONFIGS / "ventricle.yaml", ["train.lr=1e-4", "train.patch_size=[64,64]", "model.encoder_weights=null"]
    )
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.patch_size == (64, 64)
    assert cfg.model.encoder_weights is None


def test_amp_off_stays_off_though_yaml_reads_off_as_false(tmp_path):
    # `--set train.amp=off` failed with "train.amp must be auto, bf16, fp16 or off" (seen on a GPU machine)
    assert load_config(CONFIGS / "ventricle.yaml", ["train.amp=off"]).train.amp == "off"
    p = tmp_path / "c.yaml"
    p.write_text("task:\n  name: ventricle\ntrain:\n  amp: off\n")
    assert load_config(p).train.amp == "off"
    with pytest.raises(ConfigError, match="train.amp must be auto, bf16, fp16 or off"):
        load_config(CONFIGS / "ventricle.yaml", ["train.amp=on"])


def test_bad_override_and_cross_field_checks_fail():
    with pytest.raises(ConfigError):
        load_config(CONFIGS / "ventricle.yaml", ["train.lr"])
    with pytest.raises(ConfigError, match="multiples of 16"):
        load_config(CONFIGS / "ventricle.yaml", ["train.patch_size=[30,30]"])
    with pytest.raises(ConfigError, match="not in task.labels"):
        load_config(CONFIGS / "ventricle.yaml", ["task.numerator=[ventricles]"])
    with pytest.raises(ConfigError, match="task.lesions must name foreground labels"):
        load_config(CONFIGS / "liver-cyst.yaml", ["task.lesions=[cyst,background]"])
    with pytest.raises(ConfigError, match="train.monitor must be one of val_dice, val_dice_pooled, val_score"):
        load_config(CONFIGS / "ventricle.yaml", ["train.monitor=val_loss"])
    assert load_config(CONFIGS / "ventricle.yaml", ["train.monitor=val_dice_pooled"]).train.monitor.endswith("pooled")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.patch_size=[0,0]", r"train.patch_size = \[0, 0\]: must be between 16 and 4096"),
        ("train.cases_per_batch=0", "train.cases_per_batch = 0: must be between 1"),
        ("train.slices_per_case=0", "train.slices_per_case = 0: must be between 1"),
        ("train.patience=0", "train.patience = 0: must be at least 1"),  # it trained no epoch at all
        ("train.val_cases=-1", "train.val_cases = -1: must be at least 0"),
        ("train.lr=-0.001", "train.lr = -0.001: must be between"),
        ("train.lr=nan", "train.lr = nan: must be between"),
        ("augment.flip_lr=2", "augment.flip_lr = 2: must be between 0 and 1"),
        ("augment.scale=[1.2,0.5]", r"augment.scale = \[1.2, 0.5\]: give \[smallest, largest\]"),
        ("preprocess.context_slices=-1", "preprocess.context_slices = -1: must be between 0"),
        ("model.channels=[8]", r"model.channels = \[8\]: give at least two levels"),
        ("model.dropout=2", "model.dropout = 2: must be between 0 and 0.99"),
        ("eval.low_confidence=1.5", "eval.low_confidence = 1.5: must be between 0 and 1"),
    ],
)
def test_out_of_range_values_fail_with_the_key_and_its_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "ventricle.yaml", [override])


def test_every_shipped_config_is_in_range():
    for path in CONFIGS.glob("*.yaml"):
        load_config(path)


def test_a_config_without_a_task_section_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    for text in ("", "train:\n  epochs: 3\n"):  # an empty file trained the built-in defaults without a word
        p.write_text(text)
        with pytest.raises(ConfigError, match="has no task section"):
            load_config(p)
