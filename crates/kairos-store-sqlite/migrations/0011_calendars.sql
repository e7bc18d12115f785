-- Calendars: named sets of days and windows (holidays, blackout windows) that triggers exclude
-- (`"exclude": ["de-holidays"]`) or are limited to (`"only": [...]`). The document is kept as
-- written; its name and namespace are also columns, for the unique key.
CREATE TABLE calendars (
    id          INTEGER PRIMARY KEY,
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (namespace, name)
);

-- The calendars each job's triggers name, written with the job's document: a change of a
-- calendar re-plans exactly these jobs, and a calendar still named cannot be deleted.
CREATE TABLE job_calendars (
    job_id     INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    namespace  TEXT    NOT NULL,
    calendar   TEXT    NOT NULL,
    PRIMARY KEY (job_id, calendar)
) WITHOUT ROWID;
CREATE INDEX job_calendars_calendar ON job_calendars (namespace, calendar);

