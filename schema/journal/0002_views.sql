-- Stable, read-only views for analytics scripts and the sqlite3 shell.

-- Every event with the common fields decoded.
CREATE VIEW journal_events AS
SELECT position,
       stream,
       substr(stream, 1, instr(stream, ':') - 1) AS stream_kind,
       substr(stream, instr(stream, ':') + 1)    AS stream_id,
       version,
       type,
       data,
       json_extract(meta, '$.command')           AS command,
       json_extract(meta, '$.command_id')        AS command_id,
       event_id,
       correlation_id,
       recorded_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', recorded_at / 1000.0, 'unixepoch') AS recorded_at_iso
FROM journal;

-- The work queue's history: who held which item, with which token, when.
CREATE VIEW work_item_events AS
SELECT position,
       json_extract(data, '$.work_item_id')    AS work_item_id,
       substr(type, length('work_item.') + 1)  AS event,
       json_extract(data, '$.worker')          AS worker,
       json_extract(data, '$.token')           AS token,
       json_extract(data, '$.lease_expires_at') AS lease_expires_at,
       correlation_id                          AS task_id,
       recorded_at
FROM journal
WHERE type >= 'work_item.' AND type < 'work_item/';
