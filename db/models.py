"""peewee models of module.db (the tables are created by `db.schema` migrations).

Models are not bound to a database: queries are bound to the connection they run on
(`query.bind(db)`), so a process can hold several mirrors at once.
"""
from peewee import BooleanField, CompositeKey, IntegerField, Model, TextField


class Base(Model):
    class Meta:
        database = None
        legacy_table_names = False


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
    is_app = BooleanField()
    transfer = IntegerField()
    a_transfer = IntegerField()
    duration = IntegerField(null=True)
    billsec = IntegerField(null=True)


class Call(Base):
    linkedid = TextField(unique=True)
    start_ms = IntegerField()
    end_ms = IntegerField()
    direction = TextField()
    status = TextField()
    reason = TextField(null=True)
    answered = BooleanField()
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


class CallEmployee(Base):
    extension = TextField()
    start_ms = IntegerField()
    call_id = IntegerField()

    class Meta:
        primary_key = False


class CallNumber(Base):
    """FTS5 trigram index of a call's numbers; rowid = call.id."""
    rowid = IntegerField(primary_key=True)
    numbers = TextField()


class Employee(Base):
    extension = TextField(primary_key=True)
    name = TextField()


class GroupMember(Base):
    group_name = TextField()
    extension = TextField()

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
