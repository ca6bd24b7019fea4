"""Plan-only composes with libyaml's parser (``harness.config.store.libyaml_loading``): every
config file must load to exactly what OmegaConf's own pure-Python loader makes of it."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import yaml
from omegaconf import OmegaConf, _utils

from harness.config.store import libyaml_loading
from harness.paths import CONF_DIR

HYDRAS_CONF = Path(hydra.__file__).parent / "conf"
FILES = sorted(CONF_DIR.rglob("*.yaml")) + sorted(HYDRAS_CONF.rglob("*.yaml"))

pytestmark = pytest.mark.skipif(
    not getattr(yaml, "__with_libyaml__", False), reason="PyYAML built without libyaml"
)


def loaded(path_or_text: Path | str) -> str:
    """The config as OmegaConf writes it back: types show (``'1'`` against ``1``, ``1.0``)."""
    if isinstance(path_or_text, Path):
        return OmegaConf.to_yaml(OmegaConf.load(path_or_text))
    return OmegaConf.to_yaml(OmegaConf.create(yaml.load(path_or_text, _utils.get_yaml_loader())))


def test_there_are_files_to_compare():
    assert len(FILES) > 40
    assert any(p.is_relative_to(HYDRAS_CONF) for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_file_loads_the_same(path):
    pythons = loaded(path)
    with libyaml_loading():
        libyamls = loaded(path)
    assert libyamls == pythons


@pytest.mark.parametrize(
    "text",
    [
        "lr: 1e-3\nn: 1_000\nratio: .5\nbig: 6.0e+9\nneg: -2.5E-2\n",  # OmegaConf's float rule
        "day: 2024-01-01\nstamp: 2001-12-14t21:59:43.10-05:00\n",  # no timestamps: strings
        "a: yes\nb: off\nc: ~\nd: '07'\ne: 0x1F\nf: .inf\ng: -.nan\n",
        "nested:\n  list: [1, 'two', 3.0, null]\n  map: {k: v}\nunicode: \u00e9t\u00e9 \u2713\n",
        "text: |\n  two\n  lines\nfolded: >\n  one\n  line\n",
    ],
)
def test_scalars_resolve_as_omegaconfs_loader_resolves_them(text):
    pythons = loaded(text)
    with libyaml_loading():
        libyamls = loaded(text)
    assert libyamls == pythons


def test_a_duplicate_key_is_still_refused():
    with libyaml_loading(), pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        loaded("a: 1\nb: 2\na: 3\n")
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate"):
        loaded("a: 1\nb: 2\na: 3\n")


def test_the_parser_is_libyamls_inside_and_pythons_after():
    with libyaml_loading():
        assert issubclass(_utils.get_yaml_loader(), yaml.CSafeLoader)
    assert not issubclass(_utils.get_yaml_loader(), yaml.CSafeLoader)
    with pytest.raises(RuntimeError), libyaml_loading():
        raise RuntimeError("a compose that fails")
    assert not issubclass(_utils.get_yaml_loader(), yaml.CSafeLoader)  # restored all the same
