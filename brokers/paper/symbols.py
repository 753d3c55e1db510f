"""Symbol master of the paper market: real KRX listings with a reference price.

The paper market streams real codes and names so that a watchlist or a rule
built against it keeps working, unchanged, when the user switches to a real
broker. Reference prices are plausible levels, not live data: they seed the
simulated price walk and its first day's ±30% limits. They are chosen so that
every KRX tick band (1 won up to 1,000 won) is exercised by some symbol, which
keeps tick-grid bugs visible in paper trading rather than only with real money.
"""

from __future__ import annotations

from dataclasses import dataclass

from brokers.base import SymbolInfo

__all__ = ["SYMBOLS", "PaperSymbol", "by_code", "search"]


@dataclass(frozen=True, slots=True)
class PaperSymbol(SymbolInfo):
    """A listing plus the reference price (won, on the tick grid) the simulation starts from."""

    ref_price: int

    @property
    def info(self) -> SymbolInfo:
        """The plain listing, without the simulation-only reference price.

        Returned by the public API so that equality with :class:`SymbolInfo`
        values from other brokers holds (dataclass equality compares classes).
        """
        return SymbolInfo(self.code, self.name_ko, self.name_en, self.market)


def _k(code: str, name_ko: str, name_en: str, ref_price: int) -> PaperSymbol:
    return PaperSymbol(code, name_ko, name_en, "KOSPI", ref_price)


def _q(code: str, name_ko: str, name_en: str, ref_price: int) -> PaperSymbol:
    return PaperSymbol(code, name_ko, name_en, "KOSDAQ", ref_price)


# Roughly by market capitalisation within each market. The comment after a price
# names its tick band, so a reader can check the band coverage at a glance.
SYMBOLS: tuple[PaperSymbol, ...] = (
    # ---- KOSPI ------------------------------------------------------------
    _k("005930", "삼성전자", "Samsung Electronics", 71_300),  # 100-won band
    _k("000660", "SK하이닉스", "SK hynix", 204_500),  # 500
    _k("373220", "LG에너지솔루션", "LG Energy Solution", 358_500),  # 500
    _k("207940", "삼성바이오로직스", "Samsung Biologics", 1_045_000),  # 1,000
    _k("005380", "현대차", "Hyundai Motor", 214_500),  # 500
    _k("000270", "기아", "Kia", 98_600),  # 100
    _k("068270", "셀트리온", "Celltrion", 181_300),  # 100
    _k("035420", "NAVER", "NAVER", 212_000),  # 500
    _k("035720", "카카오", "Kakao", 38_650),  # 50
    _k("051910", "LG화학", "LG Chem", 283_500),  # 500
    _k("006400", "삼성SDI", "Samsung SDI", 246_000),  # 500
    _k("105560", "KB금융", "KB Financial Group", 85_300),  # 100
    _k("055550", "신한지주", "Shinhan Financial Group", 51_200),  # 100
    _k("086790", "하나금융지주", "Hana Financial Group", 61_800),  # 100
    _k("316140", "우리금융지주", "Woori Financial Group", 16_890),  # 10
    _k("012330", "현대모비스", "Hyundai Mobis", 251_000),  # 500
    _k("005490", "POSCO홀딩스", "POSCO Holdings", 297_500),  # 500
    _k("028260", "삼성물산", "Samsung C&T", 128_700),  # 100
    _k("066570", "LG전자", "LG Electronics", 81_400),  # 100
    _k("012450", "한화에어로스페이스", "Hanwha Aerospace", 684_000),  # 1,000
    _k("010130", "고려아연", "Korea Zinc", 812_000),  # 1,000
    _k("003230", "삼양식품", "Samyang Foods", 1_248_000),  # 1,000
    _k("329180", "HD현대중공업", "HD Hyundai Heavy Industries", 318_500),  # 500
    _k("034020", "두산에너빌리티", "Doosan Enerbility", 24_750),  # 50
    _k("259960", "크래프톤", "Krafton", 356_000),  # 500
    _k("009150", "삼성전기", "Samsung Electro-Mechanics", 134_600),  # 100
    _k("033780", "KT&G", "KT&G", 112_300),  # 100
    _k("017670", "SK텔레콤", "SK Telecom", 55_900),  # 100
    _k("030200", "KT", "KT", 45_750),  # 50
    _k("015760", "한국전력", "Korea Electric Power", 27_850),  # 50
    _k("003490", "대한항공", "Korean Air", 23_400),  # 50
    _k("323410", "카카오뱅크", "KakaoBank", 21_950),  # 50
    _k("034220", "LG디스플레이", "LG Display", 11_250),  # 10
    _k("010140", "삼성중공업", "Samsung Heavy Industries", 13_480),  # 10
    _k("032640", "LG유플러스", "LG Uplus", 10_470),  # 10
    _k("024110", "기업은행", "Industrial Bank of Korea", 15_200),  # 10
    _k("047040", "대우건설", "Daewoo Engineering & Construction", 3_745),  # 5
    _k("088350", "한화생명", "Hanwha Life Insurance", 2_905),  # 5
    _k("452260", "한화갤러리아", "Hanwha Galleria", 1_287),  # 1
    _k("001510", "SK증권", "SK Securities", 563),  # 1
    # ---- KOSDAQ -----------------------------------------------------------
    _q("247540", "에코프로비엠", "EcoPro BM", 123_400),  # 100
    _q("086520", "에코프로", "EcoPro", 64_500),  # 100
    _q("196170", "알테오젠", "Alteogen", 412_500),  # 500
    _q("028300", "HLB", "HLB", 57_800),  # 100
    _q("214450", "파마리서치", "PharmaResearch", 368_000),  # 500
    _q("145020", "휴젤", "Hugel", 287_000),  # 500
    _q("058470", "리노공업", "LEENO Industrial", 196_800),  # 100
    _q("277810", "레인보우로보틱스", "Rainbow Robotics", 246_500),  # 500
    _q("141080", "리가켐바이오", "LigaChem Biosciences", 98_700),  # 100
    _q("000250", "삼천당제약", "Sam Chun Dang Pharm", 143_200),  # 100
    _q("068760", "셀트리온제약", "Celltrion Pharm", 48_150),  # 50
    _q("039030", "이오테크닉스", "EO Technics", 152_400),  # 100
    _q("214150", "클래시스", "Classys", 52_300),  # 100
    _q("328130", "루닛", "Lunit", 44_350),  # 50
    _q("041510", "에스엠", "SM Entertainment", 86_900),  # 100
    _q("035900", "JYP Ent.", "JYP Entertainment", 68_900),  # 100
    _q("122870", "와이지엔터테인먼트", "YG Entertainment", 49_950),  # 50
    _q("263750", "펄어비스", "Pearl Abyss", 32_400),  # 50
    _q("293490", "카카오게임즈", "Kakao Games", 15_780),  # 10
    _q("112040", "위메이드", "Wemade", 29_650),  # 50
    _q("078340", "컴투스", "Com2uS", 38_200),  # 50
    _q("053800", "안랩", "AhnLab", 61_700),  # 100
    _q("005290", "동진쎄미켐", "Dongjin Semichem", 26_350),  # 50
    _q("098460", "고영", "Koh Young Technology", 13_020),  # 10
    _q("046890", "서울반도체", "Seoul Semiconductor", 7_350),  # 10
)

_BY_CODE: dict[str, PaperSymbol] = {s.code: s for s in SYMBOLS}


def by_code(code: str) -> PaperSymbol | None:
    """The listing with this exact 6-digit code, or ``None``."""
    return _BY_CODE.get(code)


def search(query: str, limit: int = 20) -> list[SymbolInfo]:
    """Find listings for the symbol picker.

    Matches a code prefix, or a substring of the Korean or English name
    (case-insensitively). Ranking, best first: an exact code or exact name,
    then prefix matches (code or name), then other substring matches. Ties keep
    the master's order, which is roughly by market cap, so ``"삼성"`` lists
    Samsung Electronics before smaller Samsung affiliates.
    """
    q = query.strip().casefold()
    if not q or limit <= 0:
        return []
    ranked: list[tuple[int, int, SymbolInfo]] = []
    for order, sym in enumerate(SYMBOLS):
        names = (sym.name_ko.casefold(), sym.name_en.casefold())
        if sym.code == q or q in names:
            rank = 0
        elif sym.code.startswith(q) or any(n.startswith(q) for n in names):
            rank = 1
        elif any(q in n for n in names):
            rank = 2
        else:
            continue
        ranked.append((rank, order, sym.info))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [info for _, _, info in ranked[:limit]]
