"""The lab's point release: the deb822 source written into hosts, with its key inline."""

from gpufleet.lab import point_release

ARMOUR = "-----{} PGP PUBLIC KEY BLOCK-----"
KEY = "\n".join([ARMOUR.format("BEGIN"), "", "mDMEZ...", "=abcd", ARMOUR.format("END")])


def test_the_source_carries_its_key_inline_with_blank_lines_as_dots():
    entry = point_release.sources_entry("http://10.77.0.1:8000/files/debian-point-release/", KEY)
    assert entry == (
        "Types: deb\n"
        "URIs: http://10.77.0.1:8000/files/debian-point-release/\n"
        "Suites: ./\n"
        "Signed-By:\n"
        " -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        " .\n"
        " mDMEZ...\n"
        " =abcd\n"
        " -----END PGP PUBLIC KEY BLOCK-----\n"
    )
