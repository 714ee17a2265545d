"""Settings: one table of keys (detection/settings.py), refused when unknown, and the settings
table of docs/operations.md and the shipped .ini files in step with it."""
import re

import pytest
from pyramid.paster import get_appsettings

from detection.settings import (
    PROJECT_MODELS_FILE,
    SETTINGS,
    SettingsError,
    parse_settings,
)
from tests.support import ROOT

ROW = re.compile(r"^\| (`\w+`(?:, `\w+`)*) \| ([^|]+) \|", re.MULTILINE)


def documented_defaults() -> dict[str, str]:
    """docs/operations.md's settings table: key -> its documented default, notes in parentheses
    dropped."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text[text.index("| `detection.` key"):text.index("Environment overrides")]
    documented = {}
    for keys, defaults in ROW.findall(table):
        names = re.findall(r"`(\w+)`", keys)
        values = [re.sub(r"\(.*?\)", "", v).strip().strip("`").rstrip("/")
                  for v in defaults.split(", ")]
        assert len(names) == len(values), (keys, defaults)
        documented.update(zip(names, values))
    return documented


def test_the_docs_document_every_setting_with_its_default():
    documented = documented_defaults()
    assert set(documented) == set(SETTINGS)
    for key, setting in SETTINGS.items():
        if key == "models_file":
            assert ROOT / documented[key] == PROJECT_MODELS_FILE
        elif setting.default.replace(".", "").isdigit():
            assert float(documented[key]) == float(setting.default), key
        else:
            assert documented[key] == setting.default, key


@pytest.mark.parametrize("name", ["production", "development", "testing"])
def test_the_shipped_ini_files_use_known_settings(name):
    ini = ROOT / "configs" / f"{name}.ini"
    settings = parse_settings(get_appsettings(str(ini)), str(ini), environ={})
    assert settings.default_model == "rtmdet_tiny"


def test_an_unknown_or_malformed_setting_is_refused_with_its_name():
    with pytest.raises(SettingsError, match="detection.max_quue"):
        parse_settings({"detection.max_quue": "5"}, environ={})
    with pytest.raises(SettingsError, match="detection.max_queue must be between"):
        parse_settings({"detection.max_queue": "0"}, environ={})
    with pytest.raises(SettingsError, match="detection.public_url"):
        parse_settings({"detection.public_url": "example.org"}, environ={})


def test_defaults_and_environment_overrides():
    settings = parse_settings({}, environ={"DETECTION_DEFAULT_MODEL": "yolox_nano"})
    assert settings.default_model == "yolox_nano" and settings.max_queue == 100
    assert settings.max_storage_bytes == 10240 * 2**20 and settings.models_file == PROJECT_MODELS_FILE
