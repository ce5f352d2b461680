"""The lab registry's download site (`/files/`): what apt and get_url ask of it."""

import urllib.error
import urllib.request

import pytest

from gpufleet.lab.standins.ollama.registry import Registry


@pytest.fixture
def site(tmp_path):
    files = tmp_path / "files"
    (files / "ollama" / "v0.14.2").mkdir(parents=True)
    (files / "ollama" / "v0.14.2" / "ollama-linux-amd64.tar.zst").write_bytes(b"release")
    elsewhere = tmp_path / "cache" / "cuda"
    (elsewhere / "pool").mkdir(parents=True)
    (elsewhere / "pool" / "nvidia-smi_535.1-0+deb12u1~x_amd64.deb").write_bytes(b"deb")
    (files / "cuda").symlink_to(elsewhere)
    (tmp_path / "secret").write_text("not served")
    registry = Registry({}, files)
    base = registry.start()
    yield base
    registry.stop()


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_a_release_is_served_at_its_versioned_path(site):
    assert fetch(f"{site}/files/ollama/v0.14.2/ollama-linux-amd64.tar.zst") == b"release"


def test_apt_style_paths_are_decoded_and_links_followed(site):
    # apt asks for "./pool/..." with "+" and "~" percent-encoded.
    url = f"{site}/files/cuda/./pool/nvidia-smi_535.1-0%2bdeb12u1%7ex_amd64.deb"
    assert fetch(url) == b"deb"


@pytest.mark.parametrize("path", ["../secret", "%2e%2e/secret", "cuda/../../secret", "nothing"])
def test_nothing_outside_the_directory_is_served(site, path):
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(f"{site}/files/{path}")
    assert error.value.code == 404
