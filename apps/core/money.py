"""Money as integer minor units with an ISO 4217 code. Never float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# ISO 4217 minor-unit exponents that differ from 2. Everything else is 2.
_EXPONENTS: dict[str, int] = {
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    "CLF": 4,
    "UYW": 4,
}


class CurrencyError(ValueError):
    pass


def normalize_currency(code: str) -> str:
    code = (code or "").strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise CurrencyError(f"'{code}' is not an ISO 4217 currency code")
    return code


def exponent_for(currency: str) -> int:
    return _EXPONENTS.get(normalize_currency(currency), 2)


def to_decimal(minor: int, currency: str) -> Decimal:
    """Minor units to a Decimal amount with the currency's exponent: (1999, 'USD') -> Decimal('19.99')."""
    if not isinstance(minor, int) or isinstance(minor, bool):
        raise TypeError("money amounts are integer minor units")
    exp = exponent_for(currency)
    return (Decimal(minor) / (Decimal(10) ** exp)).quantize(Decimal(1).scaleb(-exp))


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """A decimal amount to minor units; refuses floats and amounts finer than the currency allows."""
    if isinstance(amount, float):
        raise TypeError("money is never float")
    exp = exponent_for(currency)
    value = Decimal(amount) * (Decimal(10) ** exp)
    if value != value.to_integral_value():
        raise CurrencyError(f"{amount} has more decimals than {currency} allows ({exp})")
    return int(value)


@dataclass(frozen=True)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise TypeError("money amounts are integer minor units")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @property
    def exponent(self) -> int:
        return exponent_for(self.currency)

    @property
    def amount(self) -> Decimal:
        return to_decimal(self.minor, self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"
