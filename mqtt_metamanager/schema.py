"""The store's tables (peewee models, created at open) and the statements the store runs
on them, written once as SQL: building them through peewee's query builder for every row
was most of the service's CPU under load (docs/performance.md). Public so that tests and
tools can time and explain what the store runs.
"""

from __future__ import annotations

from types import SimpleNamespace

import peewee as pw

SCHEMA_VERSION = 2

GET_OBJECT = (
    "SELECT key, type, namespace, name, value, resource_version, updated_at FROM meta WHERE key = ?"
)
UPDATE_OBJECT = (
    "UPDATE meta SET type = ?, namespace = ?, name = ?, value = ?, resource_version = ?,"
    " updated_at = ?, revision = ? WHERE key = ?"
)
INSERT_OBJECT = (
    "INSERT INTO meta (type, namespace, name, value, resource_version, updated_at, revision, key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
DELETE_OBJECT = "DELETE FROM meta WHERE key = ? RETURNING type, namespace, name, value"
ADD_CHANGE = (
    "INSERT INTO changes (revision, event, key, type, namespace, name, value, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The same UPDATE, unless the stored resourceVersion is a number (ASCII digits, up to 20)
# greater than the parameter: the staleness check of an insert in the statement it makes.
UPDATE_UNLESS_NEWER = UPDATE_OBJECT + (
    " AND NOT (resource_version <> '' AND resource_version NOT GLOB '*[^0-9]*'"
    " AND length(resource_version) <= 20 AND CAST(resource_version AS INTEGER) > ?)"
)
INSERT_UNLESS_STORED = INSERT_OBJECT.replace("INSERT INTO", "INSERT OR IGNORE INTO")
# Values as UTF-8 bytes (a BLOB): they go into replies as they are, never decoded.
GET_VALUE = "SELECT CAST(value AS BLOB) FROM meta WHERE key = ?"
GET_VERSION = "SELECT resource_version FROM meta WHERE key = ?"
# Every put and delete records its change and pruning keeps the newest one, so the newest
# change is the store's revision: one look-up in the primary key. Only a store that never
# changed since schema 2 has none, and then its objects' revisions say it (a scan, once).
LAST_REVISION = (
    "SELECT COALESCE((SELECT MAX(revision) FROM changes), (SELECT MAX(revision) FROM meta), 0)"
)
COUNT_OBJECTS = "SELECT COUNT(*) FROM meta"
# COUNT(*), not COUNT(key): the type index alone answers it; COUNT(key) read every row.
COUNT_BY_TYPE = "SELECT type, COUNT(*) FROM meta GROUP BY type"
UPSERT_OBJECT = INSERT_OBJECT + (
    " ON CONFLICT(key) DO UPDATE SET type = excluded.type, namespace = excluded.namespace,"
    " name = excluded.name, value = excluded.value,"
    " resource_version = excluded.resource_version, updated_at = excluded.updated_at,"
    " revision = excluded.revision"
)
# Objects of one type with, for each, whether the object of the same namespace and name of
# another type is stored (a pod status and its pod): one statement, no object decoded.
WITH_OWNER = (
    "SELECT s.key, s.namespace, CAST(s.value AS BLOB), EXISTS (SELECT 1 FROM meta AS o"
    " WHERE o.key = s.namespace || '/' || ? || '/' || s.name)"
    " FROM meta AS s WHERE s.type = ? ORDER BY s.namespace, s.key"
)
FORGET_CHANGES_BEFORE = "DELETE FROM changes WHERE revision < ?"
# One namespace's values joined by SQLite into one BLOB: no Python object per value (each
# a ~1 KiB heap block), and the index on (type, namespace, key) gives the key order
# without a sorter holding every value (issue 13).
LIST_VALUES = (
    "SELECT CAST(group_concat(value, ',') AS BLOB) FROM"
    " (SELECT value FROM meta WHERE type = ? AND namespace = ? ORDER BY key)"
)
GET_APPLIED = "SELECT replies FROM applied WHERE msg_id = ?"
PUT_APPLIED = "INSERT OR REPLACE INTO applied (msg_id, replies, applied_at) VALUES (?, ?, ?)"
ADD_OUTBOX = "INSERT INTO outbox (topic, payload, correlation, retain) VALUES (?, ?, ?, ?)"
REMOVE_OUTBOX = "DELETE FROM outbox WHERE id = ?"


def models(db: pw.Database) -> SimpleNamespace:
    """Model classes bound to one database, so several stores can live in one process."""

    class Base(pw.Model):
        class Meta:
            database = db

    class Meta(Base):
        key = pw.CharField(primary_key=True)
        type = pw.CharField(index=True)
        value = pw.TextField()
        namespace = pw.CharField(default="")
        name = pw.CharField(default="")
        resource_version = pw.CharField(default="")
        updated_at = pw.FloatField(default=0.0)
        revision = pw.IntegerField(default=0)

        class Meta:
            table_name = "meta"
            # Lists (type, namespace) in key order straight from the index: no sorter.
            indexes = ((("type", "namespace", "key"), False),)

    class Change(Base):
        revision = pw.IntegerField(primary_key=True)
        event = pw.CharField()  # ADDED, MODIFIED, DELETED
        key = pw.CharField()
        type = pw.CharField()
        namespace = pw.CharField()
        name = pw.CharField()
        value = pw.TextField()  # the object after the change (before it, for DELETED)
        at = pw.FloatField(index=True)

        class Meta:
            table_name = "changes"
            indexes = ((("type", "revision"), False),)

    class Applied(Base):
        msg_id = pw.CharField(primary_key=True)
        replies = pw.TextField(default="[]")
        applied_at = pw.FloatField(index=True)

        class Meta:
            table_name = "applied"

    class Outbox(Base):
        id = pw.AutoField()
        topic = pw.CharField()
        payload = pw.BlobField()
        correlation = pw.BlobField(null=True)
        retain = pw.BooleanField(default=False)

        class Meta:
            table_name = "outbox"

    return SimpleNamespace(Meta=Meta, Change=Change, Applied=Applied, Outbox=Outbox)
