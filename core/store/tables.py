"""Every table Bastion keeps, as SQLAlchemy Core: one ``MetaData`` for SQLite and PostgreSQL.

The Alembic migrations (``migrations/``) create exactly this schema; a test compares the two.
Lists and mappings (scores, reasons, keyword hits, gold labels) are JSON text; timestamps are
unix seconds. An item is named by ``(tenant, item_id)`` in every table: the one item key.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Double,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "metadata", "events", "review_tasks", "review_items", "review_reports", "review_events",
    "review_slots", "review_claims", "label_items", "labels", "label_history", "drift_triggers",
    "embedding_encoders", "embeddings", "legacy_imports", "audit_log", "event_counts",
    "language_counts", "shadow_events",
]

# Constraint names are fixed so that migrations can name them the same on every backend.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# -- the event log: every decision serving made --------------------------------------------
events = Table(
    "events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("session_id", Text),
    Column("user_id", Text),
    Column("text", Text),
    Column("text_sha256", String(64), nullable=False),
    Column("text_len", Integer, nullable=False),
    Column("decision", String(32), nullable=False),
    Column("scores", Text, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("policy_version", Text, nullable=False),
    Column("embedding", LargeBinary),  # float16
    # the category that decided a block or review (the first reason's); None for allow
    Column("category", String(64)),
    # "text", "image" or "audio"; for media, ``text`` is what it showed or said (OCR text,
    # transcript), ``embedding`` the image model's (images) or the text encoder's (audio),
    # and ``media`` the JSON facts (format, size, duration, PDQ hash, cues). Never raw media.
    Column("modality", String(8), nullable=False, server_default="text"),
    Column("media", Text),
    Column("language", String(8)),  # ISO 639-1 (core.language); None: no letters to tell
    Index(None, "tenant", "ts"),
    Index(None, "tenant", "session_id"),
    Index(None, "ts"),  # the dashboards' time windows over all tenants
    sqlite_autoincrement=True,  # seq is arrival order: never reused
)

# Decisions per tenant, minute (floor(ts / 60)), decision and deciding category ('' for none),
# written with the events they count (core.store.counts): what the dashboards aggregate.
event_counts = Table(
    "event_counts", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("minute", Integer, primary_key=True),
    Column("decision", String(32), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("n", Integer, nullable=False),
    Index(None, "minute"),
)

# Decisions counted per tenant, minute, language and decision, beside event_counts: the
# dashboards' traffic per language ("" where an item had no language to tell).
language_counts = Table(
    "language_counts", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("minute", Integer, primary_key=True),
    Column("language", String(8), primary_key=True),
    Column("decision", String(32), primary_key=True),
    Column("n", Integer, nullable=False),
    Index(None, "minute"),
)

# A challenger's verdict on a sample of live traffic (``bastion shadow``), beside the
# champion's that decided it: never a decision, never in ``events``. ``bands``: per category,
# "block" or "review" where the version's score crossed that threshold (absent: allow).
shadow_events = Table(
    "shadow_events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("text", Text),  # only where the tenant's policy has store_raw_text
    Column("text_sha256", String(64), nullable=False),
    Column("language", String(8)),
    Column("version", String(64), nullable=False),  # the challenger
    Column("decision", String(32), nullable=False),
    Column("scores", Text, nullable=False),
    Column("bands", Text, nullable=False),
    Column("champion_version", String(64), nullable=False),
    Column("champion_decision", String(32), nullable=False),
    Column("champion_scores", Text, nullable=False),
    Column("champion_bands", Text, nullable=False),
    Column("champion_ms", Double),  # the champion's scoring call, as the Ingress timed it
    Column("shadow_ms", Double),  # the challenger's
    Index(None, "version", "tenant", "ts"),
    sqlite_autoincrement=True,
)

# -- the review queue ----------------------------------------------------------------------
# status: "open" | "done"; n_items: a task without items has nothing to label, so none claims it.
review_tasks = Table(
    "review_tasks", metadata,
    Column("task_id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("group_key", Text, nullable=False),
    Column("priority", Double, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("slots", Integer, nullable=False),
    Column("slots_done", Integer, nullable=False),
    Column("status", String(8), nullable=False),
    Column("n_items", Integer, nullable=False),
    Column("created_ts", Double, nullable=False),
    Column("updated_ts", Double, nullable=False),
    UniqueConstraint("tenant", "group_key"),
    Index(None, "status", "priority"),
)

review_items = Table(
    "review_items", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("text", Text),
    Column("text_sha256", String(64), nullable=False),
    Column("session_id", Text),
    Column("user_id", Text),
    Column("source", String(16), nullable=False),
    Column("scores", Text, nullable=False),
    Column("keyword_hits", Text, nullable=False),
    Column("decision", String(32)),
    Column("model_version", Text),
    Column("policy_version", Text),
    Column("ts", Double, nullable=False),
    Column("gold", Text),  # JSON {category: value} when the answer is known
    Column("modality", String(8), nullable=False, server_default="text"),
    Column("media", Text),  # JSON: the facts, transcript words, the flagged span
    # the raw image or audio, only where the tenant's policy keeps it (core.policy.MediaPolicy)
    Column("media_type", String(32)),  # its MIME type
    Column("media_blob", LargeBinary),
    Column("language", String(8)),  # ISO 639-1 (core.language)
    Index(None, "task_id"),
    Index(None, "tenant", "user_id", "ts"),
)

review_reports = Table(
    "review_reports", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("report_id", String(256), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("reporter", Text, nullable=False),
    Column("reported_user", Text),
    Column("reported_item", Text),
    Column("session_id", Text),
    Column("reason", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Index(None, "task_id"),
)

review_events = Table(
    "review_events", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("event_id", String(256), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("session_id", Text, nullable=False),
    Column("user_id", Text),
    Column("kind", String(32), nullable=False),
    Column("target_user", Text),
    Column("ts", Double, nullable=False),
    Index(None, "task_id"),
)

# A task's slots are rows of their own, so a claim is a compare-and-set on one row.
# state: "free" | "leased" (by token until leased_until; past it, anyone may take it) | "done".
review_slots = Table(
    "review_slots", metadata,
    Column("task_id", String(32), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("state", String(8), nullable=False),
    Column("token", String(64)),
    Column("moderator", Text),
    Column("leased_until", Double),
)

# One row per claim ever made; (task_id, moderator) unique: one moderator, one slot of a task.
# state: "leased" | "released" | "submitted"; a lost lease is one whose slot has another token.
review_claims = Table(
    "review_claims", metadata,
    Column("token", String(64), primary_key=True),
    Column("task_id", String(32), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("moderator", Text, nullable=False),
    Column("state", String(10), nullable=False),
    Column("leased_until", Double, nullable=False),
    Column("claimed_ts", Double, nullable=False),
    Column("submission_id", String(128), unique=True),
    Column("submitted_ts", Double),
    UniqueConstraint("task_id", "moderator"),
)

# -- labels: moderators' (written by the review queue) and imported ones --------------------
# An item labels refer to; text is None when the tenant's policy kept only the digest (such
# an item's labels still count for moderators and precision, not for training).
label_items = Table(
    "label_items", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("text", Text),
    Column("text_sha256", String(64), nullable=False),
    Column("session_id", Text),
    Column("user_id", Text),
    Column("source", String(16), nullable=False),  # review | import | gold
    Column("ts", Double, nullable=False),
    # "image" labels are about the picture, not the text it shows: the text heads' training
    # and calibration leave them out (audio labels are about what was said: they stay)
    Column("modality", String(8), nullable=False, server_default="text"),
)

# The one current label per (item, annotator, category); a revision moves the old one to
# label_history. submission_id: the review submission that gave it (None for imports).
labels = Table(
    "labels", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("item_id", String(256), primary_key=True),
    Column("annotator", String(256), primary_key=True),
    Column("category", String(64), primary_key=True),
    Column("value", Double, nullable=False),
    Column("confidence", Double, nullable=False),
    Column("ts", Double, nullable=False),
    Column("submission_id", String(128)),
    ForeignKeyConstraint(["tenant", "item_id"], [label_items.c.tenant, label_items.c.item_id]),
    Index(None, "ts"),
    Index(None, "submission_id"),
)

label_history = Table(
    "label_history", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("item_id", String(256), nullable=False),
    Column("annotator", String(256), nullable=False),
    Column("category", String(64), nullable=False),
    Column("value", Double, nullable=False),
    Column("confidence", Double, nullable=False),
    Column("ts", Double, nullable=False),
    Column("submission_id", String(128)),
    Column("replaced_ts", Double, nullable=False),
    Index(None, "tenant", "item_id"),
    sqlite_autoincrement=True,
)

# -- drift: the record of every retraining-trigger decision ---------------------------------
drift_triggers = Table(
    "drift_triggers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("action", String(16), nullable=False),  # submitted | cooldown | running | failed
    Column("rule", Text, nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list
    Column("job_id", Text),
    Column("model_version", Text),
    Column("message", Text, nullable=False),
    Index(None, "action", "at"),
    sqlite_autoincrement=True,
)

# -- training: embeddings of frozen encoders, keyed by the SHA-256 of the text --------------
embedding_encoders = Table(
    "embedding_encoders", metadata,
    Column("fingerprint", String(128), primary_key=True),
    Column("dim", Integer, nullable=False),
    Column("identity", Text, nullable=False),  # JSON, for the operator
)

embeddings = Table(
    "embeddings", metadata,
    Column("fingerprint", String(128), primary_key=True),
    Column("sha", LargeBinary(32), primary_key=True),
    Column("vec", LargeBinary, nullable=False),  # float32
    ForeignKeyConstraint(["fingerprint"], [embedding_encoders.c.fingerprint]),
)

# -- the pre-database SQLite files of a state directory, imported once (``legacy``) ----------
# name: the file's path under the state directory; sha256: its content, so another state
# directory's file of the same name (several pods on one PostgreSQL) is imported as well.
legacy_imports = Table(
    "legacy_imports", metadata,
    Column("name", String(128), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("imported_ts", Double, nullable=False),
    Column("counts", Text, nullable=False),  # JSON {table: rows}
)

# -- the audit log: every action taken in the console and through the review API ----------
# actor: the reviewer's name; role: moderator | mlops; action: sign_in, claim, reveal, submit,
# release, promote, rollback, ...; target: a task id, an item id or a model version.
audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("tenant", String(64)),
    Column("action", String(32), nullable=False),
    Column("target", Text),
    Column("detail", Text, nullable=False),  # JSON object
    Index(None, "actor", "action", "ts"),
    Index(None, "ts"),
    sqlite_autoincrement=True,
)
