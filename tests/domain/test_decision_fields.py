"""Decision fields (domain.workflows.decision_fields): declarations, values, HTML form values."""

from __future__ import annotations

import pytest

from domain.core.settings import Settings
from domain.workflows.decision_fields import (
    DecisionField,
    FieldValuesInvalid,
    default_values,
    form_name,
    from_json,
    parse_fields,
    validate_values,
    values_from_form,
)
from domain.workflows.definition_errors import DefinitionInvalid

SETTINGS = Settings(environment="test")
DECLARED = [
    {"name": "amount", "type": "number", "label": "Amount (€)", "required": True, "help": "in euros"},
    {"name": "urgent", "type": "boolean", "default": False},
    {"name": "region", "type": "choice", "options": ["eu-west", "us-east", "日本"], "default": "eu-west"},
    {"name": "note", "type": "string"},
]


def fields() -> list[DecisionField]:
    return parse_fields(DECLARED, settings=SETTINGS)


def refused(raw, settings: Settings = SETTINGS, where: str = "fields") -> list[dict[str, str]]:
    with pytest.raises(DefinitionInvalid) as caught:
        parse_fields(raw, where, settings)
    return caught.value.errors


def refused_values(declared, values, decision: str = "approve", settings: Settings = SETTINGS) -> list[str]:
    with pytest.raises(FieldValuesInvalid) as caught:
        validate_values(declared, values, decision, settings)
    return [e["field"] for e in caught.value.errors]


def test_every_type_parses_with_its_defaults_filled_in():
    amount, urgent, region, note = fields()
    assert amount == DecisionField("amount", "number", "Amount (€)", required=True, help="in euros")
    assert urgent == DecisionField("urgent", "boolean", "urgent", default=False)
    assert region.options == ("eu-west", "us-east", "日本") and region.default == "eu-west"
    assert (note.label, note.required, note.default, note.help) == ("note", False, None, None)
    assert [f.as_json() for f in fields()][2] == {
        "name": "region",
        "type": "choice",
        "label": "region",
        "required": False,
        "options": ["eu-west", "us-east", "日本"],
        "default": "eu-west",
        "help": None,
    }
    assert from_json([f.as_json() for f in fields()]) == fields()
    assert parse_fields(None, settings=SETTINGS) == [] and parse_fields([], settings=SETTINGS) == []


@pytest.mark.parametrize(
    ("declaration", "path"),
    [
        ({"name": "1st", "type": "string"}, "fields[0].name"),
        ({"name": "a" * 65, "type": "string"}, "fields[0].name"),
        ({"name": "été", "type": "string"}, "fields[0].name"),
        ({"type": "string"}, "fields[0].name"),
        ({"name": "a", "type": "date"}, "fields[0].type"),
        ({"name": "a", "type": "string", "required": "yes"}, "fields[0].required"),
        ({"name": "a", "type": "string", "colour": "red"}, "fields[0].colour"),
        ({"name": "a", "type": "string", "options": ["x"]}, "fields[0].options"),
        ({"name": "a", "type": "choice"}, "fields[0].options"),
        ({"name": "a", "type": "choice", "options": []}, "fields[0].options"),
        ({"name": "a", "type": "choice", "options": ["x", "x"]}, "fields[0].options[1]"),
        ({"name": "a", "type": "choice", "options": ["x", ""]}, "fields[0].options[1]"),
        ({"name": "a", "type": "choice", "options": ["x"], "default": "y"}, "fields[0].default"),
        ({"name": "a", "type": "number", "default": "3"}, "fields[0].default"),
        ({"name": "a", "type": "number", "default": True}, "fields[0].default"),
        ({"name": "a", "type": "boolean", "default": "true"}, "fields[0].default"),
        ({"name": "a", "type": "string", "default": 3}, "fields[0].default"),
        ({"name": "a", "type": "string", "default": "x" * 11}, "fields[0].default"),
        ({"name": "a", "type": "string", "label": ""}, "fields[0].label"),
        ({"name": "a", "type": "string", "help": "x\x00y"}, "fields[0].help"),
        ("amount", "fields[0]"),
    ],
)
def test_a_bad_declaration_is_refused_naming_its_path(declaration, path):
    settings = Settings(environment="test", decision_field_max_length=10)
    errors = refused([declaration], settings, where="steps[1].fields")
    assert [e["field"] for e in errors] == ["steps[1]." + path]


def test_names_are_unique_and_the_count_is_bounded_by_the_setting():
    errors = refused([{"name": "a", "type": "string"}, {"name": "a", "type": "number"}])
    assert errors == [{"field": "fields[1].name", "message": "duplicate field name 'a'"}]
    two = Settings(environment="test", decision_fields_max=2)
    assert len(parse_fields(DECLARED[:2], settings=two)) == 2
    assert refused(DECLARED[:3], two)[0]["field"] == "fields"
    assert "DECISION_FIELDS_MAX" in refused(DECLARED[:3], two)[0]["message"]
    assert refused({"name": "a"})[0]["field"] == "fields"


def test_values_are_typed_and_every_declared_field_is_given_one():
    values = validate_values(fields(), {"amount": 12.5, "note": "Grüße, 世界 🚀"}, settings=SETTINGS)
    assert values == {"amount": 12.5, "urgent": False, "region": "eu-west", "note": "Grüße, 世界 🚀"}
    assert validate_values(fields(), {"amount": 3, "region": "日本", "urgent": True}, settings=SETTINGS) == {
        "amount": 3,
        "urgent": True,
        "region": "日本",
        "note": None,
    }


@pytest.mark.parametrize(
    ("values", "bad"),
    [
        ({"amount": "12"}, "fields.amount"),
        ({"amount": True}, "fields.amount"),
        ({"amount": float("nan")}, "fields.amount"),
        ({"amount": 2**63}, "fields.amount"),
        ({"amount": 1, "urgent": "yes"}, "fields.urgent"),
        ({"amount": 1, "region": "mars"}, "fields.region"),
        ({"amount": 1, "note": 5}, "fields.note"),
        ({"amount": 1, "note": "x" * 2001}, "fields.note"),
        ({"amount": 1, "note": "nul\x00"}, "fields.note"),
        ({"amount": 1, "colour": "red"}, "fields.colour"),
        ({}, "fields.amount"),
        ({"amount": ""}, "fields.amount"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(values, bad):
    assert refused_values(fields(), values) == [bad]


def test_required_fields_apply_to_approve_only_but_a_rejections_values_are_still_checked():
    assert validate_values(fields(), {}, "reject", SETTINGS)["amount"] is None
    assert refused_values(fields(), {"region": "mars"}, "reject") == ["fields.region"]
    errors = refused_values(fields(), {"urgent": 1, "region": "mars"})
    assert errors == ["fields.amount", "fields.urgent", "fields.region"]
    assert refused_values(fields(), []) == ["fields"]


def test_a_required_field_with_a_default_takes_the_default_when_not_given():
    declared = parse_fields(
        [{"name": "tier", "type": "choice", "options": ["a", "b"], "required": True, "default": "b"}], settings=SETTINGS
    )
    assert validate_values(declared, {}, settings=SETTINGS) == {"tier": "b"}


def test_the_string_length_bound_is_the_setting_counted_in_characters():
    declared = parse_fields([{"name": "note", "type": "string"}], settings=SETTINGS)
    five = Settings(environment="test", decision_field_max_length=5)
    assert validate_values(declared, {"note": "日本語です"}, settings=five) == {"note": "日本語です"}
    assert refused_values(declared, {"note": "日本語です!"}, settings=five) == ["fields.note"]


def test_a_timeouts_values_are_the_defaults():
    assert default_values(fields()) == {"amount": None, "urgent": False, "region": "eu-west", "note": None}


def test_form_values_are_parsed_to_their_types():
    form = {
        "fields.amount": " -2.5e1 ",
        "fields.urgent": "on",
        "fields.region": "us-east",
        "fields.note": "Ça va? ✓",
        "comment": "not a field",
        "csrf": "token",
    }
    assert values_from_form(fields(), form, settings=SETTINGS) == {
        "amount": -25.0,
        "urgent": True,
        "region": "us-east",
        "note": "Ça va? ✓",
    }
    assert values_from_form(fields(), {"fields.amount": "42"}, settings=SETTINGS) == {
        "amount": 42,
        "urgent": False,  # an unchecked checkbox is not sent
        "region": "eu-west",
        "note": None,
    }
    assert values_from_form(fields(), {"fields.amount": "7", "fields.note": ""}, settings=SETTINGS)["note"] is None
    assert [form_name(f) for f in fields()] == ["fields.amount", "fields.urgent", "fields.region", "fields.note"]


@pytest.mark.parametrize(
    ("form", "bad"),
    [
        ({"fields.amount": "twelve"}, ["fields.amount"]),
        ({"fields.amount": "1_000"}, ["fields.amount"]),
        ({"fields.amount": "inf"}, ["fields.amount"]),
        ({"fields.amount": ""}, ["fields.amount"]),
        ({"fields.amount": "1", "fields.urgent": "maybe"}, ["fields.urgent"]),
        ({"fields.amount": "1", "fields.region": "mars"}, ["fields.region"]),
        ({"fields.amount": "1", "fields.colour": "red"}, ["fields.colour"]),
        ({"fields.amount": "x", "fields.region": "mars"}, ["fields.amount", "fields.region"]),
    ],
)
def test_a_bad_form_value_is_refused_naming_the_input(form, bad):
    with pytest.raises(FieldValuesInvalid) as caught:
        values_from_form(fields(), form, settings=SETTINGS)
    assert [e["field"] for e in caught.value.errors] == bad
    assert caught.value.field == bad[0] and caught.value.message


def test_a_rejection_from_a_form_needs_no_required_field():
    assert values_from_form(fields(), {}, "reject", SETTINGS)["amount"] is None
