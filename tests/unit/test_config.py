from __future__ import annotations

from pathlib import Path

import pytest
from edge_opt.config import DEFAULT_CONFIG_PATH, ArtifactFormat, Config, load_config, parse_config, with_overrides
from edge_opt.errors import ConfigError
from edge_opt.options import Precision

pytestmark = pytest.mark.unit


def test_shipped_default_matches_built_in_defaults() -> None:
    # The YAML documents the defaults; it must not drift from the code's.
    assert load_config(DEFAULT_CONFIG_PATH) == Config()


def test_guide_defaults() -> None:
    config = load_config()
    assert config.precisions == (Precision.FP32, Precision.FP16, Precision.INT8)
    assert config.calibration_batches == 8


def test_empty_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_unknown_key_names_key_and_allowed(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("calibraton_batches: 16\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "calibraton_batches" in message and "calibration_batches" in message and "\n" not in message


def test_nested_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'model\.nmae'.*name"):
        parse_config({"model": {"nmae": "resnet18"}})


def test_unknown_precision_lists_allowed() -> None:
    with pytest.raises(ConfigError, match=r"'int9'.*'fp32', 'fp16' or 'int8'"):
        parse_config({"precisions": ["int9"]})


def test_wrong_type() -> None:
    with pytest.raises(ConfigError, match=r"'many'.*calibration_batches"):
        parse_config({"calibration_batches": "many"})


def test_out_of_range() -> None:
    with pytest.raises(ConfigError, match="calibration_batches"):
        parse_config({"calibration_batches": 0})


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_validate_and_keep_the_rest() -> None:
    config = with_overrides(Config(), {"precisions": ["int8"], "model.name": "resnet18", "target": None})
    assert config.precisions == (Precision.INT8,)
    assert config.model.name == "resnet18"
    assert config.formats == (ArtifactFormat.TORCHSCRIPT, ArtifactFormat.ONNX)
    with pytest.raises(ConfigError, match="command line"):
        with_overrides(Config(), {"calibration_batches": -1})


def test_executorch_format_and_pt2e_quantizer() -> None:
    from edge_opt.cli.export import build_parser, config_from_args

    args = build_parser().parse_args(["--format", "all", "--precision", "int8"])
    config = config_from_args(args)
    assert [f.value for f in config.formats] == ["torchscript", "onnx", "executorch", "litert"]
    assert config.quantization.pt2e_quantizer.value == "xnnpack"
    assert [f.value for f in Config().formats] == ["torchscript", "onnx"]  # the default stays: .pte builds are slow
    with pytest.raises(ConfigError, match=r"quantization.pt2e_quantizer.*expected one of"):
        parse_config({"quantization": {"pt2e_quantizer": "x86_inductor"}})
