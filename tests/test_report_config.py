"""The report's configuration section: the options that apply to the run, grouped; none of the config left out."""

from dataclasses import fields

from tripletnet.config import OPTION_GROUPS, TrainConfig
from tripletnet.report import html as html_report
from tripletnet.report.html import OPTION_APPLIES, config_groups


def _shown(config: TrainConfig) -> dict[str, dict[str, object]]:
    return {title: dict(rows) for title, rows in config_groups(config)}


def test_every_option_is_shown_under_its_fields_group_when_no_condition_hides_it(monkeypatch):
    assert set(OPTION_APPLIES) <= {f.name for f in fields(TrainConfig)}, "a condition names an option the config lacks"
    monkeypatch.setattr(html_report, "OPTION_APPLIES", {})
    shown = _shown(TrainConfig(seed=7))
    assert list(shown) == [group for group in OPTION_GROUPS if group in shown]
    for f in fields(TrainConfig):
        assert f.name in shown[f.metadata["group"]], f.name
    assert shown["run"]["seed"] == 7


def test_an_mnist_run_shows_no_image_folder_options_and_augmentation_only_when_on(tmp_path):
    shown = _shown(TrainConfig(augment=False))
    assert "image_size" not in shown["data"] and "cache_images" not in shown["data"] and "data_path" in shown["data"]
    assert shown["augmentation"] == {"augment": False}
    assert "rotation" in _shown(TrainConfig(augment=True))["augmentation"]
    cosine = _shown(TrainConfig(lr_schedule="cosine"))["optimisation"]
    assert "lr_drop_epoch" in shown["optimisation"] and "lr_drop_epoch" not in cosine and "lr_drop_factor" in cosine
    folder = _shown(TrainConfig(dataset=str(tmp_path), image_size=32))
    assert folder["data"]["image_size"] == 32 and "data_path" not in folder["data"]


def test_each_option_is_shown_once_in_group_order():
    shown = [name for _, rows in config_groups(TrainConfig(augment=True)) for name, _ in rows]
    assert len(shown) == len(set(shown))
    assert [title for title, _ in config_groups(TrainConfig())][:3] == ["data", "augmentation", "model"]
