-- Calendars: named sets of days and windows (holidays, blackout windows) that triggers exclude
-- (`"exclude": ["de-holidays"]`) or are limited to (`"only": [...]`). The document is kept as
-- written; its name and namespace are also columns, for the unique key.
CREATE TABLE calendars (
    id          bigserial   PRIMARY KEY,
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    spec        text        NOT NULL,
    version     bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    UNIQUE (namespace, name)
);

-- The calendars each job's triggers name, written with the job's document: a change of a
-- calendar re-plans exactly these jobs, and a calendar still named cannot be deleted. Every
-- writer locks a calendar's row before job rows: a job write share-locks the calendars it
-- names (and checks their versions) before its job row, a calendar change locks the calendar,
-- then its jobs in id order.
CREATE TABLE job_calendars (
    job_id     bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    namespace  text   NOT NULL,
    calendar   text   NOT NULL,
    PRIMARY KEY (job_id, calendar)
);
CREATE INDEX job_calendars_calendar ON job_calendars (namespace, calendar);
