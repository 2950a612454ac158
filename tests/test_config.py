"""Config: embedded defaults, `${VAR}` references, environment overrides, and a token that never leaks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.cli import main
from bot.config import Config, load_config
from bot.core.problems import InvalidContent

TOKEN = "987654:SECRET-token-value"


def test_defaults_need_no_file() -> None:
    config = load_config(None, environ={})
    assert config.database_url.startswith("sqlite:///")
    assert config.default_language in config.languages
    assert config.telegram.token is None
    assert config.facts("it")["opening_hours"].startswith("lun")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "database_url: sqlite:///file.db\ntelegram:\n  staff_chat_id: -100\n  api_url: https://file.example/bot\n",
        encoding="utf-8",
    )
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "AFTERCARE_DATABASE_URL": "postgresql+psycopg://u@h/db",
        "AFTERCARE_STAFF_CHAT_ID": "-200",
        "AFTERCARE_TELEGRAM_API_URL": "http://127.0.0.1:9/bot",
        "AFTERCARE_INVITE_SECRET": "s3cret",
    }
    config = load_config(path, environ=env)
    assert config.database_url == "postgresql+psycopg://u@h/db"
    assert config.telegram.staff_chat_id == -200
    assert config.telegram.api_url == "http://127.0.0.1:9/bot"
    assert config.telegram.token is not None and config.telegram.token.get_secret_value() == TOKEN
    assert config.invite_secret is not None and config.invite_secret.get_secret_value() == "s3cret"
    assert TOKEN not in repr(config) and TOKEN not in str(config.model_dump())


def test_values_reference_environment_variables(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('clinic:\n  phone: "${CLINIC_PHONE}"\n  name: "${CLINIC_NAME:-Skin Lab}"\n', encoding="utf-8")
    config = load_config(path, environ={"CLINIC_PHONE": "+48 12 345"})
    assert config.facts("en")["clinic_phone"] == "+48 12 345"
    assert config.facts("en")["clinic_name"] == "Skin Lab"


def test_per_language_clinic_facts(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("clinic:\n  opening_hours: {en: Mon-Fri, pl: pon-pt}\n", encoding="utf-8")
    config = load_config(path, environ={})
    assert config.facts("pl")["opening_hours"] == "pon-pt"
    assert config.facts("es")["opening_hours"] == "Mon-Fri"  # falls back to the default language


def test_bad_settings_are_located_and_the_token_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"timezone: Mars/Olympus\ndefault_language: fr\ntelegram:\n  token: {TOKEN}\n  staf_chat_id: 1\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidContent) as caught:
        load_config(path, environ={})
    messages = [str(p) for p in caught.value.problems]
    assert any(":5: unknown setting 'telegram.staf_chat_id'" in m for m in messages)
    assert any(":1:" in m and "unknown timezone" in m for m in messages)
    assert all(TOKEN not in m for m in messages)


def test_invalid_token_type_is_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"telegram:\n  token: [{TOKEN}]\n", encoding="utf-8")
    assert main(["--config", str(path), "check"]) == 1
    captured = capsys.readouterr()
    assert "telegram.token" in captured.out
    assert TOKEN not in captured.out + captured.err


def test_missing_config_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "check"]) == 1
    assert "config file not found" in capsys.readouterr().out


def _settings(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        names.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += _settings(field.annotation, f"{prefix}{name}.")
    return names


def test_the_example_config_loads_and_documents_every_setting() -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    load_config(example, environ={})
    text = example.read_text(encoding="utf-8")
    undocumented = [name for name in _settings(Config) if f"{name.rpartition('.')[2]}:" not in text]
    assert undocumented == []
