"""Russian and English for the pages. Texts are written in English in the templates and
looked up here; the language follows the user's choice, else the admin shell's (the PBX
user's language), else the browser's."""
from __future__ import annotations

import re

LANGUAGES = {"en": "English", "ru": "Русский"}

# The call statuses: in Russian the PBX's own wording (the module's manual: "ok" for an
# answered call); in English plain words, the same on the page, in its filter and in exports.
STATUS_LABELS = {
    "en": {"answered": "answered", "transferred": "transfer", "missed": "missed",
           "not_reached": "not reached", "client_called_back": "client called back",
           "we_called_back": "we called back", "application": "application"},
    "ru": {"answered": "ok", "transferred": "перевод", "missed": "пропущен",
           "not_reached": "недозвон", "client_called_back": "перезвонил клиент",
           "we_called_back": "перезвонили", "application": "приложение"},
}

# What a call in progress is doing (`mirror.live.LIVE_STATES`).
LIVE_LABELS = {
    "en": {"talking": "talking", "queue": "in queue", "ringing": "ringing", "ivr": "in IVR",
           "voicemail": "voicemail", "dialing": "dialling"},
    "ru": {"talking": "разговор", "queue": "в очереди", "ringing": "звонит", "ivr": "в меню",
           "voicemail": "голосовая почта", "dialing": "набор"},
}

# The history page's tabs, as they are labelled (English; translated through RUSSIAN).
TAB_LABELS = {"all": "All", "incoming": "Incoming", "missed": "Missed", "outgoing": "Outgoing",
              "internal": "Internal", "unreturned": "Unreturned missed"}

# The page's named periods, as they are labelled.
PERIOD_LABELS = {"today": "Today", "yesterday": "Yesterday", "this_week": "This week",
                 "last_week": "Last week", "this_month": "This month", "last_month": "Last month",
                 "this_year": "This year", "last_year": "Last year"}

RUSSIAN = {
    "Call history": "История звонков",
    "Extended call history": "Расширенная история звонков",
    "Telephony": "Телефония",
    "Employees": "Сотрудники",
    "Modules": "Модули",
    "System": "Система",
    "Log out": "Выйти",
    "Today": "Сегодня", "Yesterday": "Вчера", "This week": "Эта неделя",
    "Last week": "Прошлая неделя", "This month": "Этот месяц", "Last month": "Прошлый месяц",
    "This year": "Этот год", "Last year": "Прошлый год",
    "Custom": "Произвольный",
    "From": "С", "To": "По", "Apply": "Применить", "Reset": "Сбросить",
    "All": "Все", "Incoming": "Входящие", "Missed": "Пропущенные", "Outgoing": "Исходящие",
    "Internal": "Внутренние", "Unreturned missed": "Не перезвонили",
    "Number, name, call ID...": "Номер, имя, ID звонка...",
    "Employee": "Сотрудник", "Employees...": "Сотрудники...", "Groups...": "Группы...",
    "Statuses...": "Статусы...", "Min. talk, s": "Разговор от, с",
    "Save": "Сохранить", "Saved filters": "Сохранённые отборы", "Filter name": "Название отбора",
    "Open this filter by default": "Открывать этот отбор по умолчанию",
    "default": "по умолчанию", "Delete": "Удалить", "Make default": "Сделать основным",
    "Cancel": "Отмена", "Columns": "Колонки",
    "Live": "Онлайн", "Paused": "Пауза", "Show more": "Показать ещё",
    "Calls in progress": "Идущие звонки", "since": "с", "Show all": "Показать все",
    "Show fewer": "Свернуть",
    "No calls match this filter.": "Нет звонков по этому отбору.",
    "Date": "Дата звонка", "Who": "Кто", "Whom": "Кому", "Line": "Линия", "Status": "Статус",
    "Wait": "Ожидание", "Talk": "Разговор", "Record": "Запись",
    "Direction": "Направление",
    "incoming": "входящий", "outgoing": "исходящий", "internal": "внутренний",
    "answered": "ответил", "no answer": "не ответил", "busy": "занято",
    "via": "через",
    "Before the answer, or until the caller hung up":
        "До ответа или до того, как звонящий положил трубку",
    "Missed by": "Пропустили", "Answered by": "Ответил", "Transferred to": "Переведён на",
    "Returns the missed call": "Перезвон на пропущенный",
    "Returned by": "Перезвонили звонком",
    "Call back attempts": "Попыток перезвонить",
    "Recording unavailable": "Запись недоступна",
    "Download": "Скачать", "Legs": "Каналы", "Call": "Звонок",
    "Language": "Язык",
    "Request refused": "Запрос отклонён",
    "Bad filter": "Неверный отбор",
    "Correct the filter and apply it again.": "Исправьте отбор и примените его снова.",
    "Not found": "Не найдено",
    "Nothing to save: that filter is gone.": "Нечего сохранять: отбор уже удалён.",
    "The form expired or did not come from this page. Reload it and try again.":
        "Форма устарела или отправлена не с этой страницы. Обновите страницу и повторите.",
    "calls": "звонков",
    "Call ID": "ID звонка", "Who (name)": "Кто (имя)", "Whom (name)": "Кому (имя)",
    "Records": "Записи", "Filter": "Отбор", "Calls": "Звонки", "Exported by": "Выгрузил",
    "Exported at": "Выгружено", "Period": "Период", "Back": "Назад",
    "Log in": "Вход", "User name": "Имя пользователя", "Password": "Пароль",
    "Wrong user name or password.": "Неверное имя пользователя или пароль.",
    "transfer": "перевод", "Average wait": "Среднее ожидание",
    # What an export's Filter sheet and PDF header say of the filter
    "No recordings": "Нет записей",
    "No call of this filter has a recording. Change the filter and try again.":
        "Ни у одного звонка этого отбора нет записи разговора. Измените отбор и повторите.",
    "Tab": "Вкладка", "Search": "Поиск", "Groups": "Группы", "yes": "да",
    "Min. talk": "Разговор от", "s": "с",
    # Mailed reports
    "Mailed reports": "Отчёты по почте", "Mail this filter": "Отправлять этот отбор по почте",
    "Calls you choose, or a saved filter, mailed on a schedule. Each report holds only the "
    "calls you may see.":
        "Выбранные вами звонки или сохранённый отбор по расписанию на почту. В отчёт попадают "
        "только звонки, которые вам доступны.",
    "New report": "Новый отчёт", "No reports yet.": "Отчётов пока нет.",
    "Report": "Отчёт", "Saved filter": "Сохранённый отбор", "When": "Когда",
    "Format": "Формат", "Recipients": "Получатели", "Next": "Следующая отправка",
    "Last sent": "Последняя отправка", "Send now": "Отправить сейчас",
    "How often": "Как часто", "At (PBX time)": "Время (АТС)", "Date (once)": "Дата (однократно)",
    "Weekday (weekly)": "День недели (еженедельно)",
    "Day of month (monthly)": "День месяца (ежемесячно)",
    "State": "Состояние", "active": "активен", "paused": "приостановлен",
    "Delivery": "Доставка", "file attached": "файл во вложении", "download link": "ссылка",
    "attached": "вложение", "link": "ссылка",
    "Link valid, hours": "Ссылка действует, часов", "at most": "не более",
    "separate with ;": "через ;", "Subject": "Тема", "Message": "Письмо",
    "Template values": "Подстановки", "Saved.": "Сохранено.",
    "The report goes out within a minute; its line appears in the log below.":
        "Отчёт уйдёт в течение минуты; строка о нём появится в журнале ниже.",
    "Delete this report and its log?": "Удалить отчёт и его журнал?",
    "Sent": "Отправки", "Attempts": "Попытки", "File": "Файл", "until": "до",
    "Not sent yet.": "Ещё не отправлялся.",
    "once": "однократно", "daily": "ежедневно", "weekly": "еженедельно",
    "monthly": "ежемесячно", "day": "день",
    "sent": "отправлен", "sending": "отправляется", "retrying": "повтор", "failed": "ошибка",
    "Monday": "Понедельник", "Tuesday": "Вторник", "Wednesday": "Среда", "Thursday": "Четверг",
    "Friday": "Пятница", "Saturday": "Суббота", "Sunday": "Воскресенье",
    "Link expired": "Ссылка устарела",
    "Other users' reports": "Отчёты других пользователей", "Owner": "Владелец",
    "This report is no longer kept. Ask for it to be sent again.":
        "Этот отчёт больше не хранится. Попросите отправить его снова.",
    "Extended call history is not licensed": "Расширенная история звонков не лицензирована",
    "Activate a licence key (MIKO-…) or coupon (MIKOUPD-…) for this PBX in Module marketplace → "
    "Licence management. The call history and saved filters are kept and come back as they were.":
        "Активируйте лицензионный ключ (MIKO-…) или купон (MIKOUPD-…) для этой АТС в разделе "
        "«Маркетплейс модулей» → «Управление лицензией». История звонков и сохранённые отборы "
        "сохранены и вернутся в прежнем виде.",
    "Activate a licence": "Активировать лицензию",
    "Module marketplace": "Маркетплейс модулей",
    "Licence management": "Управление лицензией",
    "Installed modules": "Установленные модули", "Module": "Модуль", "Version": "Версия",
    "Licence": "Лицензия", "Enabled": "Включён", "Disabled": "Выключен",
    "Disabled by licence": "Выключен по лицензии",
    "Stopped after repeated crashes": "Остановлен после повторных сбоев",
    "Keep settings": "Сохранить настройки",
    "Uninstall": "Удалить", "No modules are installed.": "Модули не установлены.",
    "Available in the marketplace": "Доступно в маркетплейсе",
    "Needs MikoPBX": "Требуется MikoPBX", "Install": "Установить", "Upgrade": "Обновить",
    "Installed": "Установлен", "This PBX": "Эта АТС",
    "Licence key or coupon": "Лицензионный ключ или купон", "Activate": "Активировать",
    "Nothing to show": "Нечего показать",
    "No module is enabled yet. Ask your PBX administrator.":
        "Ни один модуль ещё не включён. Обратитесь к администратору АТС.",
    "This page is not available: its module is disabled or not installed.":
        "Страница недоступна: её модуль выключен или не установлен.",
    "Only PBX administrators manage modules and licences.":
        "Модулями и лицензиями управляют только администраторы АТС.",
    "The module's licence is not active. Please ask your PBX administrator.":
        "Лицензия модуля не активна. Обратитесь к администратору АТС.",
    # Working with calls: filters, notes, tags, deleting, settings
    "Max. talk, s": "Разговор до, с", "Max. talk": "Разговор до", "Recording": "Запись",
    "Tags...": "Теги...", "any tag": "любой тег",
    "all tags": "все теги", "Recording...": "Запись...", "with a recording": "с записью",
    "without a recording": "без записи", "Queues...": "Очереди...", "Hung up...": "Кто положил...",
    "Comment text...": "Текст комментария...", "Notes": "Заметки", "Queue": "Очередь",
    "PBX": "АТС", "All PBXs": "Все АТС", "PBXs": "АТС", "every PBX": "все АТС",
    "PBXs (none chosen: all of these)": "АТС (ничего не выбрано — все эти)",
    "Hung up": "Кто положил", "Wait in queue": "Ожидание в очереди", "Tags": "Теги",
    "Comments": "Комментарии", "Settings": "Настройки",
    "Delete the recordings of this filter...": "Удалить записи звонков этого отбора...",
    "Reason (kept with who deleted what)": "Причина (сохраняется вместе с тем, кто и что удалил)",
    "Delete this call from the history?": "Удалить этот звонок из истории?",
    "Delete the recordings of this call?": "Удалить записи этого звонка?",
    "Delete the recordings of this filter?": "Удалить записи звонков этого отбора?",
    "The call, its legs, recordings, comments and tags are removed for good; a resync does "
    "not bring them back.": "Звонок, его плечи, записи, комментарии и теги удаляются навсегда; "
                           "повторная синхронизация их не вернёт.",
    "The recording files are removed from the PBX for good; the call stays in the history.":
        "Файлы записей удаляются с АТС навсегда; звонок остаётся в истории.",
    "Calls of this filter with recordings: {n}. Their recording files are removed from the PBX "
    "for good.": "Звонков этого отбора с записями: {n}. Их файлы записей удаляются с АТС "
                 "навсегда.",
    "No call of this filter has a recording.": "Ни у одного звонка этого отбора нет записи.",
    "Deleted: {calls} calls, {files} files.": "Удалено: звонков {calls}, файлов {files}.",
    "Link copied": "Ссылка скопирована", "No changes yet.": "Изменений пока нет.",
    "Delete this comment?": "Удалить этот комментарий?", "wait in queue": "ожидание в очереди",
    "answered by": "ответил",
    "No tags yet: an admin adds them in the settings.":
        "Тегов пока нет: их добавляет администратор в настройках.",
    "edited": "изменён", "Edit": "Изменить", "Comment": "Комментировать",
    "Add a comment (up to 200 characters)": "Комментарий (до 200 символов)",
    "History of changes": "История изменений", "Link to this call": "Ссылка на этот звонок",
    "Copy link": "Копировать ссылку", "Delete recordings": "Удалить записи",
    "Delete call": "Удалить звонок", "Recordings deleted": "Записи удалены",
    "What everyone working with calls shares.": "Общее для всех, кто работает со звонками.",
    "Not saved": "Не сохранено",
    "Topics anyone who may see a call sets on it; the page filters and counts by them.":
        "Темы, которые ставит на звонок любой, кто его видит; по ним отбирают и считают звонки.",
    "Tag": "Тег", "Name": "Название", "Colour": "Цвет", "No tags yet.": "Тегов пока нет.",
    "New tag": "Новый тег", "Add tag": "Добавить тег",
    "red": "красный", "orange": "оранжевый", "yellow": "жёлтый", "olive": "оливковый",
    "green": "зелёный", "teal": "бирюзовый", "blue": "синий", "violet": "фиолетовый",
    "purple": "пурпурный", "pink": "розовый", "brown": "коричневый", "grey": "серый",
    "black": "чёрный",
    "Only an admin may change the module's settings.":
        "Настройки модуля меняет только администратор.",
    "Supervisors limited to groups": "Руководители, ограниченные группами",
    "A supervisor sees every call unless limited here: then only the calls of the chosen "
    "groups' employees — on the page, in exports, reports and the API.":
        "Руководитель видит все звонки, если не ограничен здесь: тогда только звонки "
        "сотрудников выбранных групп — на странице, в выгрузках, отчётах и API.",
    "Supervisor": "Руководитель", "Every call": "Все звонки",
    "No supervisor is limited: each sees every call.":
        "Ни один руководитель не ограничен: каждый видит все звонки.",
    "Supervisor login": "Логин руководителя", "Limit": "Ограничить",
    "History kept": "Сколько хранить историю",
    "Calls of older months are dropped whole, with their comments, tags and counters, within "
    "the hour (recording files are the PBX's and stay). Empty: every month is kept.":
        "Звонки более старых месяцев удаляются целиком, с комментариями, тегами и счётчиками, "
        "в течение часа (файлы записей принадлежат АТС и остаются). Пусто: хранятся все месяцы.",
    "Months kept before the current one": "Месяцев хранить кроме текущего", "all": "все",
    "— none: the calls chosen below": "— нет: звонки, выбранные ниже",
    "(over the saved filter, if one is chosen; nothing chosen: every call you may see)":
        "(поверх сохранённого отбора, если он выбран; ничего не выбрано — все ваши звонки)",
    "every call": "все звонки", "added": "добавлен", "deleted": "удалён",
    "The PBX has no employee groups (ModuleUsersGroups): there is nothing to limit "
    "supervisors to.": "На АТС нет групп сотрудников (ModuleUsersGroups): ограничивать "
                      "руководителей нечем.",
    # Analytics (mirror.analytics): report names, columns, series, bands.
    "Analytics": "Аналитика",
    "Traffic by hour and day": "Нагрузка по часам и дням", "Lines and DIDs": "Линии и DID",
    "DID": "DID",                       # as Russian telephony says it
    "Voice menus (IVR)": "Голосовые меню (IVR)", "Queues and ring groups": "Очереди и группы",
    "Missed calls and callbacks": "Пропущенные и перезвоны",
    "Extension": "Номер", "Answered": "Отвечено", "Talk time": "Время разговоров",
    "Average talk": "Средний разговор",
    "Missed called back": "Перезвонили пропущенным",
    "Previous period": "Прошлый период", "Calls then": "Звонков тогда",
    "Menu": "Меню", "Option pressed": "Нажатая цифра", "No choice": "Без выбора",
    "Hung up in the menu": "Положили трубку в меню",
    "Offered": "Поступило", "Abandoned": "Не дождались", "Service level": "Уровень сервиса",
    "90% waited at most": "90% ждали не дольше",
    "Average wait before hanging up": "Среднее ожидание до отбоя",
    "Who answered": "Кто ответил", "Called back": "Перезвонили", "Missed calls": "Пропущенные",
    "Share": "Доля", "Within 5 min": "В течение 5 мин", "5 to 15 min": "5–15 мин",
    "15 to 60 min": "15–60 мин", "1 to 4 hours": "1–4 часа", "4 to 24 hours": "4–24 часа",
    "Later": "Позже", "Not called back": "Не перезвонили",
    "Mon": "Пн", "Tue": "Вт", "Wed": "Ср", "Thu": "Чт", "Fri": "Пт", "Sat": "Сб", "Sun": "Вс",
    "Median time to callback": "Медиана времени до перезвона",
    "Unanswered attempts to call back": "Безуспешных попыток перезвонить",
    "Callback rate": "Доля перезвонов", "Total": "Итого",
    # The Analytics page (web.analytics_views), its files (exports.analytics_files), its mails
    "Directions...": "Направления...",
    "Trend": "Динамика", "By day": "По дням", "By week": "По неделям", "By month": "По месяцам",
    "Service level, s": "Уровень сервиса, с", "Print": "Печать",
    "Calls by hour and weekday": "Звонки по часам и дням недели",
    "Heat map": "Тепловая карта", "About": "Об отчёте",
    "What to send": "Что отправлять", "Call list": "Список звонков",
    # Contacts (web.contacts, the exports' column)
    "Contacts": "Контакты", "Contact": "Контакт", "Company": "Компания", "Numbers": "Номера",
    "E-mail": "Эл. почта", "Note": "Примечание", "Source": "Источник",
    "imported": "импортирован", "typed": "введён вручную",
    "Names for outside numbers: the PBX's phone book first, then these contacts, then the "
    "caller ID the PBX recorded.": "Имена внешних номеров: сначала из телефонной книги АТС, "
    "затем из этих контактов, затем имя звонящего, записанное АТС.",
    "Name, company, number...": "Имя, компания, номер...",
    "New contact": "Новый контакт", "No contacts found.": "Контакты не найдены.",
    "No contacts yet.": "Контактов пока нет.", "Previous page": "Назад",
    "Next page": "Вперёд",
    "Import contacts": "Импорт контактов",
    "A CSV file with a header (name, company, number, email, note, id; several numbers in one "
    "cell or columns) or a vCard file (.vcf). You see what it would change before anything is "
    "saved; importing the same file again updates its contacts.":
    "Файл CSV с заголовком (name, company, number, email, note, id или имя, компания, "
    "телефон, почта, примечание, код; несколько номеров — в одной ячейке или в нескольких "
    "колонках) или файл vCard (.vcf). Сначала вы увидите, что изменится; повторный импорт "
    "того же файла обновляет его контакты.",
    "At most": "Не больше", "Preview": "Просмотр",
    "Imported": "Импортировано", "contacts added": "добавлено контактов",
    "contacts updated": "обновлено контактов", "rows refused": "отклонено строк",
    "refused": "отклонено", "add": "добавить", "update": "обновить", "unchanged": "без изменений",
    "to add": "добавить", "to update": "обновить",
    "Nothing is saved until you apply.": "Ничего не сохранится, пока вы не примените импорт.",
    "Row": "Строка", "Action": "Действие", "Messages": "Сообщения",
    "One number a line.": "По одному номеру в строке.",
    "No calls with these numbers.": "Звонков с этими номерами нет.",
    "Older calls": "Более ранние звонки", "Import refused": "Импорт отклонён",
    "Only an admin may change the contacts.": "Изменять контакты может только администратор.",
    "Rows without a message not shown": "Не показано строк без сообщений",
    # API tokens (web.tokens_admin) and calls handled from a CRM (the worklist)
    "API tokens": "API-токены",
    "For scripts and CRMs without a browser session: they send the token as Authorization: "
    "Bearer to the API (api/v1), never to the pages.":
    "Для скриптов и CRM без сеанса браузера: токен передаётся в заголовке Authorization: "
    "Bearer к API (api/v1), страницы им не открываются.",
    "The new token, shown this once: copy it now":
    "Новый токен показан только сейчас: скопируйте его",
    "Only a digest of it is kept: it cannot be shown again. Lost, it is revoked and another "
    "one created.":
    "Хранится только его хеш: показать токен снова нельзя. Потерянный токен отзывают и "
    "создают новый.",
    "The new token": "Новый токен", "Copy": "Копировать", "Role": "Роль",
    "Extensions": "Номера", "Created": "Создан", "Last used": "Последнее использование",
    "Expires": "Истекает", "never": "никогда", "revoked": "отозван", "expired": "истёк",
    "Revoke": "Отозвать", "No API tokens yet.": "API-токенов пока нет.",
    "New token": "Новый токен", "Who uses it: the CRM, a script": "Кто им пользуется: CRM, скрипт",
    "Extensions (an operator's, a supervisor's)": "Номера (оператора, руководителя)",
    "Groups (a supervisor's)": "Группы (руководителя)",
    "An admin's token sees every call; an operator's, the calls of its extensions; a "
    "supervisor's, the calls of its extensions and of its groups' employees (as the groups "
    "are at each request) — never every call.":
    "Токен администратора видит все звонки; оператора — звонки своих номеров; руководителя — "
    "звонки своих номеров и сотрудников своих групп (по составу групп на момент запроса), но "
    "никогда не все звонки.",
    "Expires after (days)": "Истекает через (дней)", "Create token": "Создать токен",
    "For a CRM or a script pulling missed calls to call back (the worklist).":
    "Для CRM или скрипта, забирающих пропущенные звонки, по которым нужно перезвонить.",
    "Handled": "Обработан", "handled by": "обработал",
    "admin": "администратор", "supervisor": "руководитель", "operator": "оператор",
    "Only an admin may manage API tokens.": "API-токенами управляет только администратор.",
    # webhooks (settings)
    "Webhooks": "Вебхуки", "Webhook": "Вебхук", "New webhook": "Новый вебхук", "no": "нет",
    "Add webhook": "Добавить вебхук", "No webhooks yet.": "Вебхуков пока нет.",
    "Calls pushed to a CRM: each event is posted once as JSON with the call record, signed "
    "with the hook's secret, retried until the receiver accepts it.":
        "Звонки, отправляемые в CRM: каждое событие отправляется один раз в JSON с записью "
        "звонка, подписанное секретом вебхука, и повторяется, пока получатель его не примет.",
    "calls pushed to a CRM, with the log of deliveries.":
        "звонки, отправляемые в CRM, с журналом доставок.",
    "URL": "Адрес (URL)", "Events": "События", "Event": "Событие",
    "Unreturned after, minutes": "Не перезвонили через, минут",
    "Filter (the page's parameters)": "Отбор (параметры страницы)",
    "Pending": "В очереди", "Delivered": "Доставлено", "Failed": "Не доставлено",
    "pending": "в очереди", "delivered": "доставлено",
    "cancelled": "отменено", "next": "следующая попытка",
    "Missed call": "Пропущенный звонок", "Answered call": "Отвеченный звонок",
    "Missed call returned": "Перезвонили на пропущенный",
    "Not called back in time": "Не перезвонили вовремя",
    "Secret": "Секрет", "New secret": "Новый секрет",
    "The receiver checks each delivery's X-Extcdr-Signature: v1= and the hex HMAC-SHA256, with "
    "this secret, of the X-Extcdr-Timestamp header, a dot and the body; and refuses timestamps "
    "older than 5 minutes.":
        "Получатель проверяет заголовок X-Extcdr-Signature каждой доставки: v1= и HMAC-SHA256 "
        "(hex) с этим секретом от заголовка X-Extcdr-Timestamp, точки и тела запроса; и "
        "отклоняет метки времени старше 5 минут.",
    "Deliveries": "Доставки", "Time": "Время", "Response": "Ответ", "Redeliver": "Отправить снова",
    "Nothing sent yet.": "Пока ничего не отправлено.", "Older": "Раньше", "Newest": "Новые",
}

# Titles with a number in them (mirror.analytics): the English pattern and the Russian.
_RUSSIAN_PATTERNS = ((re.compile(r"Answered within (\d+) s"), "Отвечено за {0} с"),)


def translated(text: str, language: str) -> str:
    """A title in the language, with a number kept (\"Answered within 20 s\")."""
    if language != "ru":
        return text
    if text in RUSSIAN:
        return RUSSIAN[text]
    for pattern, russian in _RUSSIAN_PATTERNS:
        if found := pattern.fullmatch(text):
            return russian.format(*found.groups())
    return text


def negotiate(choice: str | None, shell: str | None, accept: str | None) -> str:
    """The page language: the user's saved choice, the admin shell's, the browser's, English."""
    for candidate in (choice, shell):
        if candidate and candidate[:2].lower() in LANGUAGES:
            return candidate[:2].lower()
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip()[:2].lower()
        if code in LANGUAGES:
            return code
    return "en"


def translator(language: str):
    """`_` for the templates."""
    if language == "ru":
        return lambda text: RUSSIAN.get(text, text)
    return lambda text: text


# What a filter says is wrong with it (`mirror.queries.QueryError`), as the page shows it in
# Russian: the English sentence's pattern and its Russian wording (the values typed are kept as
# typed).
_RUSSIAN_ERRORS = tuple((re.compile(pattern), russian) for pattern, russian in (
    (r"a hook needs a name of at most (\d+) characters",
     "у вебхука должно быть название не длиннее {0} символов"),
    (r"choose at least one event", "выберите хотя бы одно событие"),
    (r"unreturned after: 1 to (\d+) minutes", "«Не перезвонили через»: от 1 до {0} минут"),
    (r"the URL is not valid", "адрес (URL) неверен"),
    (r"the URL must start with http:// or https://",
     "адрес (URL) должен начинаться с http:// или https://"),
    (r"the URL must name a host \(and no login\)",
     "в адресе (URL) должен быть хост (и не должно быть логина)"),
    (r"the host (.*) is not among webhooks.allowed_hosts",
     "хост {0} не входит в webhooks.allowed_hosts"),
    (r"the URL's host name is not valid", "имя хоста в адресе (URL) неверно"),
    (r"the host (.*) is this PBX or a special address \((.*)\): list it in "
     r"webhooks.allowed_hosts to send there",
     "хост {0} — это сама АТС или особый адрес ({1}): чтобы отправлять туда, впишите его в "
     "webhooks.allowed_hosts"),
    (r"the filter is not valid: use page parameters like (.*)",
     "отбор неверен: укажите параметры страницы, например {0}"),
    (r"the filter must be page parameters", "отбор должен состоять из параметров страницы"),
    (r"unknown filter (.*); use: (.*)", "неизвестный отбор {0}; допустимы: {1}"),
    (r"the period is empty: 'to' must be after 'from'",
     "период пуст: дата «по» должна быть позже даты «с»"),
    (r"the period is too long: at most (\d+) days on this page; choose a shorter one",
     "период слишком длинный: на этой странице не больше {0} дней; выберите период короче"),
    (r"search (.*): type at least (\d+) digits of a number or \d+ letters of a name",
     "поиск {0}: введите не меньше {1} цифр номера или {1} букв имени"),
    (r"search (.*): (\w+): takes digits .*",
     "поиск {0}: после «{1}:» нужны цифры (номер или его часть)"),
    (r"nothing after '(\w+):'", "после «{0}:» ничего не указано"),
    (r"the history is still loading: search by number or name works once it is loaded",
     "история звонков ещё загружается: поиск по номеру или имени заработает, когда она "
     "загрузится"),
    (r"min_talk must be a whole number from ([\d,]+) to ([\d,]+), not (.*)",
     "«Разговор от» — целое число секунд от {0} до {1}, а не {2}"),
    (r"(\w+) must be a whole number from ([\d,]+) to ([\d,]+), not (.*)",
     "{0}: нужно целое число от {1} до {2}, а не {3}"),
    (r"bad date (.*): use YYYY-MM-DD or YYYY-MM-DDTHH:MM\[:SS\]",
     "неверная дата {0}: используйте ГГГГ-ММ-ДД или ГГГГ-ММ-ДДTЧЧ:ММ[:СС]"),
    (r"bad date (.*): a year from (\d+) to (\d+)", "неверная дата {0}: год от {1} до {2}"),
    (r"give either a period or from/to, not both",
     "укажите либо период, либо даты «с» и «по», но не то и другое"),
    (r"unknown employee group (.*)", "нет такой группы сотрудников: {0}"),
    (r"unknown (\w+) (.*); use one of: (.*)", "неизвестное значение {1} ({0}); допустимо: {2}"),
    (r"unknown parameter (.*); use: (.*)", "неизвестный параметр {0}; допустимы: {1}"),
    (r"write a comment first: it is empty", "напишите комментарий: он пуст"),
    (r"a comment has at most (\d+) characters, this one has (\d+)",
     "в комментарии не больше {0} символов, а в этом {1}"),
    (r"only its author or an admin may change a comment",
     "комментарий меняет только его автор или администратор"),
    (r"only an admin manages the list of tags", "списком тегов управляет только администратор"),
    (r"only an admin may delete calls or recordings",
     "удалять звонки и записи может только администратор"),
    (r"give a reason for the deletion \(it is kept with who deleted what\)",
     "укажите причину удаления (она сохраняется вместе с тем, кто и что удалил)"),
    (r"a reason has at most (\d+) characters", "в причине не больше {0} символов"),
    (r"this call is still in progress: delete it once it has ended",
     "звонок ещё идёт: удалите его, когда он закончится"),
    (r"this call has no recordings to delete", "у этого звонка нет записей"),
    (r"a recording of this call lies outside the recordings folder \((.*)\): nothing was deleted",
     "запись этого звонка лежит вне папки записей ({0}): ничего не удалено"),
    (r"cannot remove the recording (.*): (.*)", "не удалось удалить запись {0}: {1}"),
    (r"the filter now selects ([\d,]+) calls with recordings, not the ([\d,]+) you confirmed: "
     r"check and confirm again",
     "теперь в отборе {0} звонков с записями, а не {1}, как вы подтвердили: проверьте и "
     "подтвердите снова"),
    (r"unknown tag (.*); an admin adds tags to the list first",
     "нет такого тега: {0}; теги добавляет администратор"),
    (r"request refused: no valid CSRF token \(reload the page\)",
     "запрос отклонён: нет действительного CSRF-токена (обновите страницу)"),
    (r"unknown colour (.*); use one of: (.*)", "нет такого цвета: {0}; допустимы: {1}"),
    (r"not found", "не найдено"),
    (r"unknown tag (.*)", "нет такого тега: {0}"),
    (r"maximum talk time must not be below the minimum",
     "«Разговор до» не может быть меньше «Разговор от»"),
    (r"(\w+) must be yes or no, not (.*)", "{0}: нужно «да» или «нет», а не {1}"),
    (r"a tag named (.*) exists already", "тег {0} уже есть"),
    (r"a tag name has at most (\d+) characters", "в названии тега не больше {0} символов"),
    (r"a tag name is plain text: .*", "название тега — простой текст, без символов < > & \" ' `"),
    (r"a tag name cannot hold a comma .*", "в названии тега не может быть запятой"),
    (r"give the tag a name", "укажите название тега"),
    (r"give the supervisor's login \(at most (\d+) characters\)",
     "укажите логин руководителя (не больше {0} символов)"),
    (r"service level must be 0 to (\d+) seconds", "уровень сервиса — от 0 до {0} секунд"),
    (r"give the token a name \(who uses it: the CRM, a script\)",
     "укажите название токена (кто им пользуется: CRM, скрипт)"),
    (r"a token name has at most (\d+) characters", "в названии токена не больше {0} символов"),
    (r"a token name is plain text: .*",
     "название токена — простой текст, без символов < > & \" ' `"),
    (r"unknown role (.*); use one of: (.*)", "нет такой роли: {0}; допустимы: {1}"),
    (r"bad PBX (.*): give PBX ids \(pbx.id: 1-32 of a-z, 0-9 and '-'\), comma-separated",
     "неверная АТС {0}: укажите идентификаторы АТС (pbx.id: 1-32 символа a-z, 0-9 и '-') "
     "через запятую"),
    (r"you may give a token only the PBXs whose calls you see, not (.*)",
     "токену можно дать только те АТС, звонки которых видите вы, а не {0}"),
    (r"employee must be an extension \(201\) or a PBX's extension \(office:201\), not (.*)",
     "сотрудник — это внутренний номер (201) или номер на АТС (office:201), а не {0}"),
    (r"bad extension (.*): give extension numbers, comma-separated",
     "неверный номер {0}: укажите внутренние номера через запятую"),
    (r"an operator's token needs the extensions whose calls it may see",
     "токену оператора нужны номера, звонки которых он может видеть"),
    (r"an admin's token sees every call: give extensions or groups to an operator's or a "
     r"supervisor's token",
     "токен администратора видит все звонки: номера и группы указывают токену оператора или "
     "руководителя"),
    (r"an operator's token sees its extensions' calls: give groups to a supervisor's token",
     "токен оператора видит звонки своих номеров: группы указывают токену руководителя"),
    (r"a supervisor's token needs the groups or extensions whose calls it may see \(an "
     r"admin's token sees every call\)",
     "токену руководителя нужны группы или номера, звонки которых он может видеть (все "
     "звонки видит токен администратора)"),
    (r"bad group (.*): give employee group names", "неверная группа {0}: укажите группы "
     "сотрудников"),

    (r"a token expires after 1 to (\d+) days", "токен истекает через 1–{0} дней"),
    (r"expires after \(days\) must be a whole number from ([\d,]+) to ([\d,]+), not (.*)",
     "«Истекает через» — целое число дней от {0} до {1}, а не {2}"),
    (r"choose what to send: the call list or one of the analytics reports \((.*)\)",
     "выберите, что отправлять: список звонков или один из отчётов аналитики ({0})"),
    # contacts and their files (mirror.contact_files, mirror.contacts, web.contacts)
    *((rf"{field} is longer than (\d+) characters", f"{russian}: больше {{0}} символов")
      for field, russian in (("name", "имя"), ("company", "компания"), ("email", "эл. почта"),
                             ("note", "примечание"), ("uid", "код"))),
    (r"e-mail (.*) is not an address: left out", "эл. почта {0} — не адрес: пропущена"),
    (r"no name", "нет имени"),
    *((rf"{field} starts with (.*): kept as text .*",
       f"{russian} начинается с {{0}}: сохранено как текст (в выгрузках — текст, не формула)")
      for field, russian in (("name", "имя"), ("company", "компания"))),
    (r"no valid phone number", "нет правильного номера телефона"),
    (r"number (.*)… is longer than (\d+) characters: left out",
     "номер {0}… длиннее {1} символов: пропущен"),
    (r"(.*) is not a phone number .*: left out",
     "{0} — не номер телефона (только цифры, пробелы, + ( ) - .): пропущен"),
    (r"(.*) is too short for an outside number \(at least (\d+) digits\): left out",
     "{0} — слишком короткий для внешнего номера (нужно не меньше {1} цифр): пропущен"),
    (r"more than (\d+) numbers: the rest left out", "больше {0} номеров: остальные пропущены"),
    (r"the same contact as row (\d+): left out", "тот же контакт, что в строке {0}: пропущен"),
    (r"the card has no END:VCARD", "у карточки нет END:VCARD"),
    (r"the file is too big: at most (\d+) MB of contacts at once",
     "файл слишком большой: не больше {0} МБ контактов за раз"),
    (r"the file is empty", "файл пуст"),
    (r"too many contacts: at most (.*) in one file; split it",
     "слишком много контактов: не больше {0} в одном файле; разделите его"),
    (r"the file is not readable text .*", "файл не читается как текст (испорченный UTF-16)"),
    (r"the file is not text .*",
     "это не текстовый файл (в нём двоичные данные); сохраните его как CSV (UTF-8) или vCard"),
    (r"unknown text encoding: .*",
     "неизвестная кодировка: сохраните файл в UTF-8 (или Windows-1251)"),
    (r"no CSV header line .*", "нет строки заголовка CSV"),
    (r"line (\d+): not CSV .*", "строка {0}: это не CSV"),
    (r"the header must name a name .*",
     "в заголовке нужны колонка имени (или компании) и колонка номера, например "
     "name,company,number,email,note,id"),
    (r"line (\d+): outside a BEGIN:VCARD … END:VCARD card",
     "строка {0}: вне карточки BEGIN:VCARD … END:VCARD"),
    (r"choose a CSV or vCard file to import", "выберите файл CSV или vCard для импорта"),
    (r"the preview expired: choose the file again",
     "просмотр устарел: выберите файл ещё раз"),
    (r"months of history to keep must be a whole number from 1 to (\d+) \(empty: keep "
     r"everything\), not (.*)",
     "сколько месяцев хранить — целое число от 1 до {0} (пусто: хранить всё), а не {1}"),
))


def say_error(message: str, language: str) -> str:
    """A filter's error message in the page's language (English as it is raised)."""
    if language == "ru":
        for pattern, russian in _RUSSIAN_ERRORS:
            found = pattern.fullmatch(message)
            if found:
                return russian.format(*found.groups())
    return message
