"""The templates directory: every check, with the file and line of its message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from wahub.core.config.templates import load_templates
from wahub.core.errors import ConfigError

REPOSITORY = Path(__file__).parents[2]


def problems_of(tmp_path: Path, name: str, text: str) -> list[str]:
    """The problems ``load_templates`` reports for one file, as ``name:line: path: message``."""
    (tmp_path / name).write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_templates(tmp_path)
    return [str(problem).removeprefix(f"{tmp_path}/") for problem in caught.value.problems]


def body_only(body: str, *, header: str = "", extra: str = "", buttons: str = "", fmt: str = "") -> str:
    return f"""\
name: notice
category: UTILITY
{fmt}languages:
  en:
    components:
{header}      - type: BODY
{body}{extra}{buttons}"""


def test_the_example_directory_is_valid_and_read_in_metas_create_shape() -> None:
    templates = {template.name: template for template in load_templates(REPOSITORY / "templates")}
    assert set(templates) == {"order_update", "appointment_reminder"}
    order = templates["order_update"]
    assert list(order.languages) == ["en", "pt_BR"]
    body = order.create_body("pt_BR")
    assert (body["name"], body["language"], body["category"], body["parameter_format"]) == (
        "order_update",
        "pt_BR",
        "UTILITY",
        "NAMED",
    )
    assert [component["type"] for component in body["components"]] == ["HEADER", "BODY", "FOOTER", "BUTTONS"]
    assert templates["appointment_reminder"].create_body("en")["parameter_format"] == "POSITIONAL"


def test_a_missing_directory_has_no_templates(tmp_path: Path) -> None:
    assert load_templates(tmp_path / "nowhere") == []


def test_the_file_name_must_be_the_template_name(tmp_path: Path) -> None:
    text = body_only('        text: "Hi"\n')
    assert problems_of(tmp_path, "other.yaml", text) == [
        "other.yaml:1: name: the template is named 'notice' but its file is other.yaml: name it notice.yaml"
    ]


def test_name_charset_category_and_language_codes(tmp_path: Path) -> None:
    text = """\
    name: Order-Update
    category: PROMO
    languages:
      english:
        components:
          - {type: BODY, text: hi}
    """
    assert problems_of(tmp_path, "Order-Update.yaml", text) == [
        "Order-Update.yaml:2: category: expected one of MARKETING, UTILITY, AUTHENTICATION, got 'PROMO'"
    ]
    text = text.replace("PROMO", "utility")
    assert problems_of(tmp_path, "Order-Update.yaml", text) == [
        "Order-Update.yaml:1: name: 'Order-Update': a template name is 1 to 512 lowercase letters, digits and "
        "underscores",
        "Order-Update.yaml:4: languages.english: 'english' is not a template language code: use Meta's form, "
        "such as en, en_US or pt_BR",
    ]


def test_one_header_body_and_footer_and_a_body_is_required(tmp_path: Path) -> None:
    text = """\
    name: notice
    category: UTILITY
    languages:
      en:
        components:
          - {type: FOOTER, text: one}
          - {type: FOOTER, text: two}
          - {type: SIGNATURE, text: three}
    """
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:6: languages.en.components: a template needs a BODY component",
        "notice.yaml:7: languages.en.components[1].type: a template has one FOOTER; the first is components[0]",
        "notice.yaml:8: languages.en.components[2].type: expected one of HEADER, BODY, FOOTER, BUTTONS, "
        "got 'SIGNATURE'",
    ]


def test_positional_placeholders_are_contiguous_with_one_example_each(tmp_path: Path) -> None:
    text = body_only('        text: "Hi {{1}}, see {{3}}"\n        example: {body_text: [["Ana", "x"]]}\n')
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:7: languages.en.components[0].text: placeholders must be {{1}} to {{2}} without gaps, "
        "not {{1}}, {{3}}"
    ]
    text = body_only('        text: "Hi {{1}}, see {{2}}"\n        example: {body_text: [["Ana"]]}\n')
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:8: languages.en.components[0].example.body_text: gives 1 example(s) for 2 placeholder(s) "
        "{{1}}, {{2}}"
    ]
    text = body_only('        text: "Hi {{1}}"\n')
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:6: languages.en.components[0]: a positional template needs example.body_text: [[...]] "
        "(a list of one list) with a value for {{1}}"
    ]


def test_named_placeholders_need_the_named_format_and_matching_examples(tmp_path: Path) -> None:
    text = body_only('        text: "Hi {{name}}"\n')
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:7: languages.en.components[0].text: {{name}} named: set parameter_format: named, "
        "or use {{1}}, {{2}}..."
    ]
    examples = "        example:\n          body_text_named_params: [{param_name: nome, example: Ana}]\n"
    text = body_only('        text: "Hi {{name}}"\n' + examples, fmt="parameter_format: named\n")
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:10: languages.en.components[0].example.body_text_named_params: gives examples for {{nome}}, "
        "the text has {{name}}"
    ]
    text = body_only(
        '        text: "Hi {{1}}"\n        example: {body_text: [["Ana"]]}\n', fmt="parameter_format: named\n"
    )
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:8: languages.en.components[0].text: parameter_format is named but {{1}} positional: use {{name}}"
    ]
    examples = "        example:\n          body_text: [[Ana]]\n"
    text = body_only('        text: "Hi {{name}}"\n' + examples, fmt="parameter_format: named\n")
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:7: languages.en.components[0]: a named template needs example.body_text_named_params: "
        "[{param_name, example}, ...] for {{name}}"
    ]


def test_positional_and_named_placeholders_never_mix(tmp_path: Path) -> None:
    examples = "        example: {body_text: [[a, b]]}\n"
    text = body_only('        text: "Hi {{1}} {{name}}"\n' + examples)
    assert problems_of(tmp_path, "notice.yaml", text)[0] == (
        "notice.yaml:7: languages.en.components[0].text: mixes positional ({{1}}) and named ({{name}}) placeholders"
    )


def test_header_examples_and_its_single_placeholder(tmp_path: Path) -> None:
    header = '      - type: HEADER\n        text: "{{1}} and {{2}}"\n        example: {header_text: [a]}\n'
    text = body_only("        text: Hi\n", header=header)
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:7: languages.en.components[0].text: a header has at most one placeholder, not {{1}}, {{2}}",
        "notice.yaml:8: languages.en.components[0].example.header_text: gives 1 example(s) for 2 placeholder(s) "
        "{{1}}, {{2}}",
    ]
    header = "      - {type: HEADER, format: IMAGE, text: Look}\n"
    assert problems_of(tmp_path, "notice.yaml", body_only("        text: Hi\n", header=header)) == [
        "notice.yaml:6: languages.en.components[0]: a IMAGE header needs example.header_file or header_handle",
        "notice.yaml:6: languages.en.components[0].text: a IMAGE header has no text",
    ]
    header = "      - {type: HEADER, format: DOCUMENT, example: {header_file: terms.pdf}}\n"
    assert problems_of(tmp_path, "notice.yaml", body_only("        text: Hi\n", header=header)) == [
        f"notice.yaml:6: languages.en.components[0].example.header_file: no file 'terms.pdf' in the templates "
        f"directory {tmp_path}"
    ]
    (tmp_path / "terms.pdf").write_bytes(b"%PDF-1.4")
    [template] = load_templates(tmp_path)
    assert template.languages["en"][0] == {
        "type": "HEADER",
        "format": "DOCUMENT",
        "example": {"header_file": "terms.pdf"},
    }


def test_lengths_of_header_body_footer_label_and_url(tmp_path: Path) -> None:
    header = f"      - {{type: HEADER, text: {'h' * 61}}}\n"
    footer = f"      - {{type: FOOTER, text: {'f' * 61}}}\n"
    url = "https://x.y/" + "u" * 1990
    buttons = f"      - type: BUTTONS\n        buttons:\n          - {{type: URL, text: {'b' * 26}, url: {url}}}\n"
    text = body_only(f"        text: {'x' * 1025}\n", header=header, extra=footer, buttons=buttons)
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:6: languages.en.components[0].text: a header's text has 61 characters, more than the 60 allowed",
        "notice.yaml:8: languages.en.components[1].text: the body's text has 1025 characters, more than the 1024 "
        "allowed",
        "notice.yaml:9: languages.en.components[2].text: the footer's text has 61 characters, more than the 60 allowed",
        "notice.yaml:12: languages.en.components[3].buttons[0].text: a button's label has 26 characters, more "
        "than the 25 allowed",
        "notice.yaml:12: languages.en.components[3].buttons[0].url: a URL has 2002 characters, more than the "
        "2000 allowed",
    ]


def test_a_url_has_at_most_one_variable_at_its_end_with_an_example(tmp_path: Path) -> None:
    buttons = (
        "      - type: BUTTONS\n        buttons:\n"
        '          - {type: URL, text: a, url: "https://x.y/{{1}}/track"}\n'
        '          - {type: URL, text: b, url: "https://x.y/{{1}}"}\n'
    )
    assert problems_of(tmp_path, "notice.yaml", body_only("        text: Hi\n", buttons=buttons)) == [
        "notice.yaml:10: languages.en.components[1].buttons[0].url: a URL button has one variable, {{1}}, at the "
        "end of its URL",
        "notice.yaml:11: languages.en.components[1].buttons[1]: a URL with {{1}} needs one example: the whole URL "
        "with a value for it",
    ]


def test_button_counts(tmp_path: Path) -> None:
    lines = [
        *(f"          - {{type: QUICK_REPLY, text: q{index}}}\n" for index in range(6)),
        *(f'          - {{type: URL, text: u{index}, url: "https://x.y"}}\n' for index in range(3)),
        *(f'          - {{type: PHONE_NUMBER, text: p{index}, phone_number: "+1555"}}\n' for index in range(2)),
        *(f"          - {{type: COPY_CODE, example: CODE{index}}}\n" for index in range(2)),
    ]
    buttons = "      - type: BUTTONS\n        buttons:\n" + "".join(lines)
    assert problems_of(tmp_path, "notice.yaml", body_only("        text: Hi\n", buttons=buttons)) == [
        "notice.yaml:10: languages.en.components[1].buttons: a template has at most 10 buttons, not 13",
        "notice.yaml:18: languages.en.components[1].buttons[8].type: a template has at most 2 URL button(s)",
        "notice.yaml:20: languages.en.components[1].buttons[10].type: a template has at most 1 PHONE_NUMBER button(s)",
        "notice.yaml:22: languages.en.components[1].buttons[12].type: a template has at most 1 COPY_CODE button(s)",
    ]


def test_every_language_takes_the_same_parameters(tmp_path: Path) -> None:
    text = """\
    name: notice
    category: UTILITY
    languages:
      en:
        components:
          - {type: BODY, text: "Hi {{1}}, on {{2}}", example: {body_text: [[Ana, Monday]]}}
      es:
        components:
          - {type: BODY, text: "Hola {{1}}", example: {body_text: [[Ana]]}}
    """
    assert problems_of(tmp_path, "notice.yaml", text) == [
        "notice.yaml:9: languages.es.components: the body takes {{1}} but in en {{1}}, {{2}}: every language "
        "takes the same parameters"
    ]


def test_every_file_is_reported_at_once_and_broken_yaml_too(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    text = body_only("        text: Hi\n").replace("category: UTILITY\n", "")
    problems = problems_of(tmp_path, "notice.yaml", text)
    assert len(problems) == 2
    assert problems[0].startswith("broken.yaml:")
    assert problems[1] == "notice.yaml:1: required key 'category' is missing"


def test_the_directory_is_read_from_beside_the_configuration_file(tmp_path: Path) -> None:
    from wahub.cli.common import load
    from wahub.core.plugins import build_plugin_manager

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("wahub:\n  templates_dir: mine\n")
    (tmp_path / "conf" / "mine").mkdir()
    (tmp_path / "conf" / "mine" / "notice.yaml").write_text(textwrap.dedent(body_only("        text: Hi {{1}}\n")))
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "conf" / "config.yaml", build_plugin_manager())
    assert str(caught.value) == (
        f"{tmp_path}/conf/mine/notice.yaml:6: languages.en.components[0]: a positional template needs "
        "example.body_text: [[...]] (a list of one list) with a value for {{1}}"
    )
    (tmp_path / "conf" / "mine" / "notice.yaml").write_text(textwrap.dedent(body_only("        text: Hi\n")))
    config = load(tmp_path / "conf" / "config.yaml", build_plugin_manager())
    assert config["wahub"]["templates_dir"] == str(tmp_path / "conf" / "mine")


def test_a_template_is_in_one_file_only(tmp_path: Path) -> None:
    (tmp_path / "notice.yml").write_text(textwrap.dedent(body_only("        text: Hi\n")))
    assert problems_of(tmp_path, "notice.yaml", body_only("        text: Hello\n")) == [
        "notice.yml:1: name: the template notice is also in notice.yaml"
    ]


@pytest.mark.parametrize("name", ["../secret.png", "/etc/hostname", "media/../../secret.png"])
def test_a_header_file_outside_the_directory_is_refused(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "templates"
    directory.mkdir()
    (tmp_path / "secret.png").write_bytes(b"\x89PNG")
    header = f"      - {{type: HEADER, format: IMAGE, example: {{header_file: '{name}'}}}}\n"
    assert problems_of(directory, "notice.yaml", body_only("        text: Hi\n", header=header)) == [
        f"notice.yaml:6: languages.en.components[0].example.header_file: {name!r} is outside the templates "
        f"directory: name a file in {directory}"
    ]


def test_a_header_file_in_a_folder_of_the_directory_is_kept(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "banner.png").write_bytes(b"\x89PNG")
    header = "      - {type: HEADER, format: IMAGE, example: {header_file: media/banner.png}}\n"
    (tmp_path / "notice.yaml").write_text(body_only("        text: Hi\n", header=header))
    [template] = load_templates(tmp_path)
    assert template.languages["en"][0]["example"] == {"header_file": "media/banner.png"}
