"""Phase 4's routing at its exact boundaries and phase 7's fee, half-up to each currency's minor unit."""

from decimal import Decimal as D

import pytest

from domain.phases.phases_money import Route, UnknownCurrency, exponent, minor_units, platform_fee, route


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [
        ("1", Route.AUTO_SUBMIT),
        ("0.85", Route.AUTO_SUBMIT),
        ("0.850", Route.AUTO_SUBMIT),
        ("0.8499", Route.SMART_PROMPT),
        ("0.50", Route.SMART_PROMPT),
        ("0.5", Route.SMART_PROMPT),
        ("0.4999", Route.NONE),
        ("0", Route.NONE),
    ],
)
def test_routing_at_the_exact_boundaries(confidence, expected):
    assert route(D(confidence)) is expected


def test_routing_refuses_floats():
    with pytest.raises(TypeError):
        route(0.85)  # type: ignore[arg-type]


def test_iso_4217_exponents():
    assert (exponent("JPY"), exponent("usd"), exponent("EUR"), exponent("KWD"), exponent("CLF")) == (0, 2, 2, 3, 4)
    with pytest.raises(UnknownCurrency):
        exponent("XYZ")


@pytest.mark.parametrize(
    ("payout", "currency", "fee", "minor"),
    [
        ("100.00", "USD", "20.00", 2000),
        ("10.03", "USD", "2.01", 201),  # 2.006 -> 2.01
        ("10.02", "USD", "2.00", 200),  # 2.004 -> 2.00
        ("10.025", "USD", "2.01", 201),  # 2.005: half-up (half-even would give 2.00)
        ("1003", "JPY", "201", 201),  # 200.6 -> 201, no minor unit
        ("2.5", "JPY", "1", 1),  # 0.5: half-up (half-even would give 0)
        ("1002", "JPY", "200", 200),  # 200.4 -> 200
        ("10.0025", "KWD", "2.001", 2001),  # 2.0005: half-up to three decimals
    ],
)
def test_fee_is_20_percent_half_up_to_the_minor_unit(payout, currency, fee, minor):
    got = platform_fee(D(payout), currency)
    assert got == D(fee) and str(got) == fee
    assert minor_units(got, currency) == minor
