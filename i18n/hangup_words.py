"""Who hung up, in words: the side (`mirror.hangups.SIDES`) and the hang-up cause.

Causes are Q.850 numbers as Asterisk reports them (`Cause` of a `Hangup`); the common ones are
worded here in English and Russian, any other falls back to Asterisk's own words (`Cause-txt`).
A call without a row in `call_hangup` is "unknown": the daemon did not see it end.
"""
from __future__ import annotations

SIDE_LABELS = {
    "en": {"caller": "caller hung up", "callee": "callee hung up", "pbx": "ended by the PBX",
           None: "unknown"},
    "ru": {"caller": "положил звонящий", "callee": "положил вызываемый",
           "pbx": "завершила АТС", None: "неизвестно"},
}

CAUSE_LABELS = {
    "en": {
        1: "Unallocated number", 3: "No route to destination", 16: "Normal clearing",
        17: "User busy", 18: "No user responding", 19: "No answer", 20: "Subscriber absent",
        21: "Call rejected", 22: "Number changed", 26: "Answered elsewhere",
        27: "Destination out of order", 28: "Invalid number format", 29: "Facility rejected",
        31: "Normal, unspecified", 34: "No circuit available", 38: "Network out of order",
        41: "Temporary failure", 42: "Switching equipment congestion",
        44: "Requested channel not available", 50: "Facility not subscribed",
        58: "Bearer capability not available", 65: "Bearer capability not implemented",
        66: "Channel type not implemented", 69: "Facility not implemented",
        79: "Service not implemented", 81: "Invalid call reference",
        88: "Incompatible destination", 95: "Invalid message", 102: "Recovery on timer expiry",
        111: "Protocol error", 127: "Interworking, unspecified",
    },
    "ru": {
        1: "Номер не существует", 3: "Нет маршрута к адресату", 16: "Нормальное завершение",
        17: "Абонент занят", 18: "Абонент не отвечает", 19: "Нет ответа",
        20: "Абонент недоступен", 21: "Вызов отклонён", 22: "Номер изменён",
        26: "Ответили на другом устройстве", 27: "Адресат не работает",
        28: "Неверный формат номера", 29: "Услуга отклонена",
        31: "Нормальное завершение, без уточнения", 34: "Нет свободных каналов",
        38: "Сеть не работает", 41: "Временный сбой", 42: "Перегрузка коммутационного оборудования",
        44: "Запрошенный канал недоступен", 50: "Услуга не подключена",
        58: "Способ передачи недоступен", 65: "Способ передачи не поддерживается",
        66: "Тип канала не поддерживается", 69: "Услуга не поддерживается",
        79: "Сервис не поддерживается", 81: "Неверная ссылка на вызов",
        88: "Несовместимый адресат", 95: "Неверное сообщение",
        102: "Истекло время ожидания", 111: "Ошибка протокола",
        127: "Межсетевое взаимодействие, без уточнения",
    },
}


def _language(language: str) -> str:
    return language if language in SIDE_LABELS else "en"


def side_words(side: str | None, language: str) -> str:
    """'caller hung up', 'callee hung up', 'ended by the PBX', or 'unknown' (None, or a side
    this version does not know)."""
    labels = SIDE_LABELS[_language(language)]
    return labels.get(side, labels[None])


def cause_words(cause: int | None, cause_txt: str, language: str) -> str:
    """The cause in words: ours for common causes, else Asterisk's text, else its number."""
    words = CAUSE_LABELS[_language(language)].get(cause) if cause is not None else None
    if words:
        return words
    if cause_txt:
        return cause_txt
    return f"{cause}" if cause is not None else ""


def hangup_words(side: str | None, cause: int | None, cause_txt: str, language: str) -> str:
    """Who hung up and why, in one phrase: 'callee hung up (Normal clearing)'; a call the
    daemon did not see end (side None): 'unknown'."""
    said = side_words(side, language)
    if side not in SIDE_LABELS["en"] or side is None:
        return said
    why = cause_words(cause, cause_txt or "", language)
    return f"{said} ({why})" if why else said
