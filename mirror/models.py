"""peewee models of module.db (the tables are created by `mirror.schema` migrations).

Models are not bound to a database: queries are bound to the connection they run on
(`query.bind(db)`), so a process can hold several mirrors at once.
"""
from peewee import BlobField, CompositeKey, IntegerField, Model, TextField


class Base(Model):
    class Meta:
        database = None
        legacy_table_names = False


class FlagField(IntegerField):
    """Yes or no, stored as 1 or 0 on both engines (hand-written SQL sums and compares flags as
    numbers, which PostgreSQL's `boolean` refuses); read as a bool."""

    def db_value(self, value):
        return None if value is None else int(bool(value))

    def python_value(self, value):
        return None if value is None else bool(value)


class Leg(Base):
    uniqueid = TextField(unique=True)
    linkedid = TextField(index=True)
    source_id = IntegerField()
    start_ms = IntegerField()
    answer_ms = IntegerField(null=True)
    end_ms = IntegerField(null=True)
    src_chan = TextField()
    src_num = TextField()
    src_name = TextField()
    dst_chan = TextField()
    dst_num = TextField()
    dst_name = TextField()
    did = TextField()
    disposition = TextField()
    dialstatus = TextField()
    recordingfile = TextField()
    from_account = TextField()
    to_account = TextField()
    appname = TextField()
    is_app = FlagField()
    transfer = IntegerField()
    a_transfer = IntegerField()
    duration = IntegerField(null=True)
    billsec = IntegerField(null=True)
    dtmf_digits = TextField(default="")
    pbx = TextField(default="")          # the PBX it came from (`pbx.id`; '': the only one)


class Call(Base):
    linkedid = TextField(unique=True)
    start_ms = IntegerField()
    end_ms = IntegerField()
    direction = TextField()
    status = TextField()
    reason = TextField(null=True)
    answered = FlagField()
    src = TextField()
    src_name = TextField()
    dst = TextField()
    dst_name = TextField()
    external_number = TextField(null=True)
    ext_key = TextField(null=True)
    did = TextField(null=True)
    line = TextField(null=True)
    answered_by = TextField(null=True)
    missed_by = TextField()        # JSON list
    transferred_to = TextField()   # JSON list
    employees = TextField()        # JSON list
    wait_s = IntegerField()
    talk_s = IntegerField()
    duration_s = IntegerField()
    recordings = TextField()       # JSON list
    callback_of = TextField(null=True)
    returned_by = TextField(null=True)
    callback_attempts = IntegerField()
    leg_count = IntegerField()
    revision = IntegerField(default=0)   # the writer transaction that last wrote it
    queue = TextField(null=True)         # the queue it went through (its `Queue:` leg)
    queue_wait_s = IntegerField(null=True)
    ivr = TextField(null=True)           # its first menu (IVR or application), incoming calls
    ivr_digits = TextField(null=True)    # what the caller pressed there
    ivr_left = IntegerField(null=True)   # the caller left unanswered in that menu
    returned_after_s = IntegerField(null=True)   # a returned missed call: seconds to the callback
    pbx = TextField(default="")          # the PBX it came from (`pbx.id`; '': the only one)


class CallGone(Base):
    """A call taken back out of `call` (still in progress), until it is written again."""
    linkedid = TextField(primary_key=True)
    revision = IntegerField()
    employees = TextField()        # JSON list: who may be told it went


class LiveCall(Base):
    """A call in progress (replaced by the daemon on every sync)."""
    linkedid = TextField(primary_key=True)
    start_ms = IntegerField()
    direction = TextField()
    state = TextField()
    since_ms = IntegerField()
    src = TextField()
    src_name = TextField()
    dst = TextField()
    dst_name = TextField()
    external_number = TextField(null=True)
    did = TextField(null=True)
    line = TextField(null=True)
    employees = TextField()        # JSON list
    parties = TextField()          # JSON list of {state, since, from, from_name, to, to_name}
    pbx = TextField(default="")


class CallEmployee(Base):
    extension = TextField()
    start_ms = IntegerField()
    call_id = IntegerField()
    placed = FlagField()        # the employee placed a leg of the call

    class Meta:
        primary_key = False


class CallNumber(Base):
    """FTS5 trigram index of a call's numbers; rowid = call.id."""
    rowid = IntegerField(primary_key=True)
    numbers = TextField()


class CallName(Base):
    """FTS5 trigram index of a call's caller and callee names; rowid = call.id."""
    rowid = IntegerField(primary_key=True)
    names = TextField()


class Comment(Base):
    """A user's comment on a call (mirror.annotations); `folded` is the text for search."""
    linkedid = TextField()
    author = TextField()
    created_ms = IntegerField()
    edited_ms = IntegerField(null=True)
    text = TextField()
    folded = TextField()


class Tag(Base):
    """A tag of the admin's list (mirror.annotations)."""
    name = TextField()
    colour = TextField()


class CallTag(Base):
    linkedid = TextField()
    tag_id = IntegerField()
    set_by = TextField()
    set_ms = IntegerField()

    class Meta:
        primary_key = CompositeKey("linkedid", "tag_id")


class CallHangup(Base):
    """Who hung up (mirror.hangups): written by the daemon for calls it saw end on AMI."""
    linkedid = TextField(primary_key=True)
    side = TextField()                   # caller | callee | pbx
    channel = TextField()
    number = TextField()
    cause = IntegerField(null=True)
    cause_txt = TextField()
    at_ms = IntegerField()


class CallHandled(Base):
    """A missed call marked handled from a CRM or a script (api/v1/worklist): it leaves the
    worklist and the Unreturned tab. Written by the web process and the CLI."""
    linkedid = TextField(primary_key=True)
    start_ms = IntegerField()            # the call's start: the tab counters' index range
    handled_by = TextField()
    at_ms = IntegerField()
    note = TextField(default="")


class Employee(Base):
    extension = TextField(primary_key=True)   # with `pbx` on PostgreSQL (several PBXs)
    name = TextField()
    pbx = TextField(default="")


class GroupMember(Base):
    group_name = TextField()
    extension = TextField()
    pbx = TextField(default="")

    class Meta:
        primary_key = False


class SyncState(Base):
    key = TextField(primary_key=True)
    value = TextField()


class SavedFilter(Base):
    user = TextField()
    name = TextField()
    params = TextField()                 # JSON of the page's filter parameters
    is_default = IntegerField(default=0)


class UserSetting(Base):
    user = TextField()
    key = TextField()
    value = TextField()

    class Meta:
        primary_key = CompositeKey("user", "key")


class Report(Base):
    owner = TextField()
    owner_role = TextField()
    owner_extensions = TextField()       # JSON list: the owner's extensions (operators)
    owner_scope = TextField()            # how those limit what they see (Visibility.scope)
    owner_pbxs = TextField(default="[]")  # JSON list: the PBXs whose calls they see ([]: all)
    pbx = TextField(default="")          # the PBX whose time it keeps ('': the only one)
    name = TextField()
    filter_id = IntegerField()           # the owner's saved filter; 0: none
    filters = TextField(default="{}")    # JSON: the report's own filter parameters
    period = TextField()                 # one of mirror.queries.PERIODS, relative to each send
    frequency = TextField()              # once | daily | weekly | monthly
    at_time = TextField()                # HH:MM, PBX local time
    on_day = IntegerField(null=True)     # weekly: 0 = Monday; monthly: 1..31
    on_date = TextField(null=True)       # once: YYYY-MM-DD
    format = TextField()                 # xlsx | csv | pdf
    delivery = TextField()               # attach | link
    link_hours = IntegerField()
    recipients = TextField()             # JSON list
    subject = TextField()                # Jinja (sandboxed)
    body = TextField()                   # Jinja (sandboxed)
    language = TextField()
    link_base = TextField()              # scheme://host the owner used: links start here
    enabled = IntegerField(default=1)
    next_run_ms = IntegerField(null=True)
    requested_ms = IntegerField(null=True)   # "send now"


class ReportSend(Base):
    report_id = IntegerField()
    due_ms = IntegerField()
    period_start_ms = IntegerField()
    period_end_ms = IntegerField()
    status = TextField()                 # sending | retrying | sent | failed
    attempts = IntegerField(default=0)
    next_attempt_ms = IntegerField(null=True)
    finished_ms = IntegerField(null=True)
    calls = IntegerField(null=True)
    recipients = TextField()             # JSON list, as sent
    delivery = TextField()               # attach | link, as sent
    file = TextField(null=True)          # relative to the reports folder
    expires_ms = IntegerField(null=True)
    error = TextField(null=True)


class ModuleSecret(Base):
    name = TextField(primary_key=True)
    value = BlobField()
