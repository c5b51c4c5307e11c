"""Money rules of the seven-phase pipeline, in `Decimal` only: claim routing by confidence (phase 4) and
the platform fee on a payout (phase 7), rounded half-up to the currency's minor unit (ISO 4217).
"""

from __future__ import annotations

import enum
from decimal import ROUND_HALF_UP, Decimal

AUTO_SUBMIT_AT = Decimal("0.85")  # confidence >= this: submitted without asking
PROMPT_AT = Decimal("0.50")  # PROMPT_AT <= confidence < AUTO_SUBMIT_AT: the user is asked to confirm
FEE_RATE = Decimal("0.20")

# ISO 4217 minor-unit exponents of the active currency codes whose exponent is not 2 ...
_ZERO = """BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"""
_THREE = """BHD IQD JOD KWD LYD OMR TND"""
_TWO = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD
CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ
GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK
MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB
SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN
UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
"""
_EXPONENT_NOT_2 = {**dict.fromkeys(_ZERO.split(), 0), **dict.fromkeys(_THREE.split(), 3), "CLF": 4, "UYW": 4}
# ... and those whose exponent is 2. (Funds and precious-metal codes without a minor unit are left out.)
_EXPONENT_2 = frozenset(_TWO.split())
CURRENCIES = frozenset(_EXPONENT_2) | frozenset(_EXPONENT_NOT_2)


class UnknownCurrency(ValueError):
    pass


def exponent(currency: str) -> int:
    """The number of digits after the decimal point of `currency`'s minor unit (JPY 0, USD 2, KWD 3)."""
    code = currency.upper()
    if code in _EXPONENT_NOT_2:
        return _EXPONENT_NOT_2[code]
    if code in _EXPONENT_2:
        return 2
    raise UnknownCurrency(f"{currency!r} is not an ISO 4217 currency code")


def to_minor_unit(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up to the currency's minor unit."""
    return amount.quantize(Decimal(1).scaleb(-exponent(currency)), rounding=ROUND_HALF_UP)


def minor_units(amount: Decimal, currency: str) -> int:
    """The integer count of minor units (what a payment API takes): 12.34 USD -> 1234, 500 JPY -> 500."""
    return int(to_minor_unit(amount, currency).scaleb(exponent(currency)))


def platform_fee(payout: Decimal, currency: str) -> Decimal:
    """20 % of the payout, half-up to the currency's minor unit."""
    return to_minor_unit(payout * FEE_RATE, currency)


def money(amount: Decimal, currency: str) -> str:
    """An amount as a person reads it: the currency's code, then the amount in its major unit with the
    currency's decimals and grouped thousands ("EUR 1,025.10", "JPY 2,510", "KWD 0.125")."""
    return f"{currency.upper()} {to_minor_unit(amount, currency):,.{exponent(currency)}f}"


def percent(rate: Decimal) -> str:
    """A rate as a percentage: 0.20 -> "20 %", 0.125 -> "12.5 %"."""
    return f"{(rate * 100).normalize():f} %"


class Route(enum.StrEnum):
    AUTO_SUBMIT = "auto_submit"
    SMART_PROMPT = "smart_prompt"
    NONE = "none"


def route(confidence: Decimal) -> Route:
    """Phase 4's routing of one match, at exact boundaries: 0.85 auto-submits, 0.8499 prompts, 0.50
    prompts, 0.4999 does nothing."""
    if not isinstance(confidence, Decimal):
        raise TypeError("confidence must be a Decimal (floats cannot hold the boundaries exactly)")
    if confidence >= AUTO_SUBMIT_AT:
        return Route.AUTO_SUBMIT
    if confidence >= PROMPT_AT:
        return Route.SMART_PROMPT
    return Route.NONE
