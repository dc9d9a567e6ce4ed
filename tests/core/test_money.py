from decimal import Decimal

import pytest

from apps.core.money import CurrencyError, Money, exponent_for, to_decimal, to_minor


@pytest.mark.parametrize(("currency", "exponent"), [("USD", 2), ("jpy", 0), ("KWD", 3), ("EUR", 2)])
def test_exponent_follows_iso_4217(currency: str, exponent: int) -> None:
    assert exponent_for(currency) == exponent


def test_minor_units_round_trip_without_float() -> None:
    assert to_decimal(1999, "USD") == Decimal("19.99")
    assert to_decimal(1999, "JPY") == Decimal("1999")
    assert to_decimal(1999, "KWD") == Decimal("1.999")
    assert to_minor(Decimal("19.99"), "USD") == 1999
    assert str(Money(120000, "eur")) == "1200.00 EUR"


def test_money_refuses_float_and_excess_precision() -> None:
    with pytest.raises(TypeError):
        to_minor(19.99, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(19.99, "USD")  # type: ignore[arg-type]
    with pytest.raises(CurrencyError):
        to_minor(Decimal("1.5"), "JPY")
    with pytest.raises(CurrencyError):
        Money(100, "US")
