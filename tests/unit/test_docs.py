"""docs/variables.md says what the roles' argument specs say, and nothing stale."""

from __future__ import annotations

from gpufleet import docs


def test_the_variables_reference_is_current():
    assert docs.PAGE.read_text() == docs.render(), "docs/variables.md is stale: run `make docs`"


def test_every_role_and_every_input_is_in_it():
    page = docs.render()
    for specs in sorted((docs.REPO / "roles").glob("*/meta/argument_specs.yml")):
        assert f"\n## {specs.parent.parent.name}\n" in page
    assert "| `host_firewall_services[].sources` | list of str | required |" in page
    assert (
        "| `base_ssh_permit_root_login` | str (no, prohibit-password, forced-commands-only) |"
        in page
    )


def test_ansible_markup_becomes_code_and_pipes_stay_in_their_cell():
    assert docs.cell("Set O(a) to C(b | c)\n  now.") == "Set `a` to `b \\| c` now."


def test_check_names_a_stale_page(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "variables.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(docs, "PAGE", stale)
    monkeypatch.setattr(docs, "REPO", tmp_path)
    assert docs.main(["--check"]) == 1
    assert "variables.md is stale: run `make docs`" in capsys.readouterr().err
