import pytest
import yaml

from agfsync.errors import ConfigurationError
from agfsync.pipelines import PRESETS, build_preset, export_presets, preset_yaml_path


class TestPresetYaml:
    @pytest.mark.parametrize("name", sorted(PRESETS))
    def test_committed_yaml_matches_its_builder(self, name: str, tmp_path) -> None:
        (written,) = [path for path in export_presets(tmp_path) if path.stem == name]
        committed = yaml.safe_load(preset_yaml_path(name).read_text())
        assert yaml.safe_load(written.read_text()) == committed, (
            f"pipelines/{name}.yaml drifted from its builder; run `agfsync presets export`."
        )

    def test_unknown_preset_names_the_choices(self) -> None:
        with pytest.raises(ConfigurationError, match=r"choose one of: .*offline, text-gemini"):
            build_preset("does-not-exist")
