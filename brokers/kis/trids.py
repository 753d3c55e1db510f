"""KIS transaction ids (``tr_id`` header) and the paper-trading rule.

Every REST call names its transaction in the ``tr_id`` header. Paper trading uses
the same endpoints with a different id: a leading ``T``, ``J`` or ``C`` becomes
``V`` (``TTTC0012U`` -> ``VTTC0012U``). Quote ids (``FHK...``) are shared by both
modes. Keeping the rule in one function means no call site can forget it, which
on a real account would send a real order from what the user thinks is paper.
"""

from __future__ import annotations

__all__ = [
    "BALANCE",
    "BUY",
    "DAILY_CANDLES",
    "DAILY_FILLS",
    "MINUTE_CANDLES_PAST",
    "MINUTE_CANDLES_TODAY",
    "PRICE",
    "REVISE_CANCEL",
    "SELL",
    "for_mode",
]

PRICE = "FHKST01010100"
DAILY_CANDLES = "FHKST03010100"
MINUTE_CANDLES_TODAY = "FHKST03010200"
MINUTE_CANDLES_PAST = "FHKST03010230"
BALANCE = "TTTC8434R"
BUY = "TTTC0012U"
SELL = "TTTC0011U"  # the old TTTC0801U/0802U may be blocked
REVISE_CANCEL = "TTTC0013U"
DAILY_FILLS = "TTTC8001R"

_PAPER_PREFIXES = ("T", "J", "C")


def for_mode(tr_id: str, paper: bool) -> str:
    """The tr_id to send: the real id as given, or its paper twin."""
    if not tr_id:
        raise ValueError("empty tr_id")
    if paper and tr_id[0] in _PAPER_PREFIXES:
        return "V" + tr_id[1:]
    return tr_id
